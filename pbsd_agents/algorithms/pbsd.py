r"""PBSD: Preference-Based Self-Distillation (arXiv 2605.05040).

The same network plays two roles. The teacher π_T sees the privileged context c (a reference
solution, gold calls) and is frozen at the initial weights θ0; the student π_θ sees only the task x.
Per task, a teacher sample is preferred over an on-policy student sample::

    y+ ~ π_T(· | x, c)         teacher prompt, frozen weights, executed in the environment
    y- ~ π_θ(· | x)            student prompt, current weights, executed in the environment
    h(y) = Σ_{t ∈ action tokens of y} [ log π_θ(y_t | x, y_<t) − log π_T(y_t | x, c, y_<t) ]
    L    = − log σ( β · ( h(y+) − h(y-) ) )

This is DPO with the teacher's log-probs as the reference and the *teacher-prompted* sample as the
chosen response; its optimum is the reward-reweighted teacher π* ∝ π_T·exp(r/β). Only action tokens
count: prompt and observation (tool result) tokens are masked out of every sum.

Paper defaults (all defaults here): the teacher sample is always the preferred one; sums, not
means; teacher frozen at θ0; y+ sampled at the student's temperature. Options, each off by default:

- ``teacher_temperature``: decoding temperature of y+ (0 = greedy).
- ``pair_filter="verifier"``: the trajectory with the higher environment reward is preferred,
  whichever produced it; pairs with equal rewards are dropped.
- ``teacher_refresh=k``: every k steps the teacher becomes the current student.
- ``length_normalize``: h divided by the number of action tokens.
- ``nll_coef``: adds ``nll_coef`` × the token-mean NLL of y+ under the student prompt.
- ``pairs_per_task``: several (y+, y-) pairs per task.

Metrics: ``h_pos`` and ``h_neg`` (their difference's mean is minus the Jeffreys gap between student
and teacher: the real progress signal), ``margin`` = h(y+) − h(y-) and ``pair_accuracy`` (both stay
negative/low until the student matches the teacher; they are not success signals), ``logp_pos`` and
``logp_neg`` (log π_θ of each side, to see likelihood displacement), ``teacher_reward``,
``identical_pairs``, ``num_pairs``, and every ``log_gap_every`` steps ``gap_tokens``: the tokens of
one pair with the largest per-token gap log π_θ − log π_T.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import Policy
from .base import Algorithm, Batch, CollectPlan, mean_reward
from .scoring import sequence_logprobs

PAIR_FILTERS = ("none", "verifier")


@dataclass
class PBSDConfig:
    beta: float = 0.1
    pairs_per_task: int = 1
    teacher_temperature: float | None = None  # None: the student's temperature (paper)
    pair_filter: str = "none"
    teacher_refresh: int = 0  # steps between teacher refreshes; 0 = frozen at θ0 (paper)
    length_normalize: bool = False
    nll_coef: float = 0.0
    log_gap_every: int = 10  # steps between gap-token logs; 0 = never

    def __post_init__(self) -> None:
        if self.pair_filter not in PAIR_FILTERS:
            raise ValueError(f"pair_filter must be one of {PAIR_FILTERS}, got {self.pair_filter!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.pairs_per_task < 1:
            raise ValueError(f"pairs_per_task must be >= 1, got {self.pairs_per_task}")
        if self.teacher_temperature is not None and self.teacher_temperature < 0:
            raise ValueError(f"teacher_temperature must be >= 0 or None, got {self.teacher_temperature}")


@dataclass
class PairScores:
    """PBSD's per-pair quantities for some (y+, y-) pairs; student sums keep their graph.

    ``logp_*``: Σ log π_θ over action tokens (student view); ``h_*``: h(y) of the module docstring
    (length-normalised when configured); ``token_logp_pos`` / ``token_teacher_pos``: per-token
    log π_θ and log π_T of each y+.
    """

    pairs: list
    logp_pos: torch.Tensor
    logp_neg: torch.Tensor
    h_pos: torch.Tensor
    h_neg: torch.Tensor
    token_logp_pos: list[torch.Tensor]
    token_teacher_pos: list[torch.Tensor]
    teacher_score_s: float


def pbsd_loss(
    h_pos: torch.Tensor, h_neg: torch.Tensor, beta: float
) -> torch.Tensor:
    """``−log σ(β (h+ − h−))`` per pair (the DPO sigmoid loss with the teacher as reference)."""
    return -F.logsigmoid(beta * (h_pos - h_neg))


class PBSD(Algorithm):
    name = "pbsd"
    summed_metrics = ("num_pairs", "identical_pairs")
    metric_weights = {k: "num_pairs" for k in ("margin", "h_pos", "h_neg", "pair_accuracy", "logp_pos", "logp_neg", "nll_pos")}
    progress_metrics = ("margin", "student_reward")
    printed_metrics = {"gap_tokens": "largest per-token gaps in a pair"}

    def plan(self) -> CollectPlan:
        n = self.config.pairs_per_task
        return CollectPlan(student_samples=n, teacher_samples=n, teacher_temperature=self.config.teacher_temperature)

    def pairs(self, batch: Batch):
        """(chosen, rejected) trajectories per the pair filter."""
        out = []
        for g in batch.groups:
            for pos, neg in zip(g.teacher, g.student):
                if self.config.pair_filter == "verifier":
                    if pos.reward == neg.reward:
                        continue
                    if neg.reward > pos.reward:
                        pos, neg = neg, pos
                out.append((pos, neg))
        return out

    def scored_pairs(self, batch: Batch) -> list:
        """The pairs the loss trains on: :meth:`pairs` where both sides generated something."""
        return [(p, n) for p, n in self.pairs(batch) if p.num_action_tokens and n.num_action_tokens]

    def score(self, pairs: list, policy: Policy) -> PairScores:
        """Student and teacher log-probs of both sides of every pair, and h(y+), h(y-)."""
        trajs = [t for pair in pairs for t in pair]  # pos0, neg0, pos1, neg1, ...
        with policy.student() as model:
            lp_student, tok_student = sequence_logprobs(model, [t.student_view() for t in trajs], self.pad_id)
        t0 = time.perf_counter()
        with torch.no_grad(), policy.teacher() as teacher:
            lp_teacher, tok_teacher = sequence_logprobs(teacher, [t.teacher_view() for t in trajs], self.pad_id)
        teacher_s = time.perf_counter() - t0
        h = lp_student - lp_teacher
        if self.config.length_normalize:
            h = h / torch.tensor([t.num_action_tokens for t in trajs], dtype=h.dtype, device=h.device)
        return PairScores(
            pairs=pairs, logp_pos=lp_student[0::2], logp_neg=lp_student[1::2], h_pos=h[0::2], h_neg=h[1::2],
            token_logp_pos=tok_student[0::2],
            token_teacher_pos=tok_teacher[0::2],
            teacher_score_s=teacher_s,
        )

    def loss(self, batch: Batch, policy: Policy):
        cfg = self.config
        teacher_samples = [t for g in batch.groups for t in g.teacher]
        metrics: dict = {
            "teacher_reward": mean_reward(teacher_samples),
            "student_reward": mean_reward([t for g in batch.groups for t in g.student]),
        }
        pairs = self.scored_pairs(batch)
        metrics["num_pairs"] = len(pairs)
        if not pairs:
            return None, metrics
        sc = self.score(pairs, policy)
        metrics["teacher_score_s"] = sc.teacher_score_s
        loss = pbsd_loss(sc.h_pos, sc.h_neg, cfg.beta).mean()
        if cfg.nll_coef:
            nll = torch.stack([-tok.mean() for tok in sc.token_logp_pos]).mean()
            loss = loss + cfg.nll_coef * nll
            metrics["nll_pos"] = nll.item()
        margin = (sc.h_pos - sc.h_neg).detach()
        metrics.update(
            h_pos=sc.h_pos.mean().item(),
            h_neg=sc.h_neg.mean().item(),
            margin=margin.mean().item(),
            pair_accuracy=(margin > 0).float().mean().item(),
            logp_pos=sc.logp_pos.mean().item(),
            logp_neg=sc.logp_neg.mean().item(),
            identical_pairs=sum(p.action_ids == n.action_ids for p, n in pairs),
        )
        if cfg.log_gap_every and batch.step % cfg.log_gap_every == 0 and policy.tokenizer is not None:
            gaps = (sc.token_logp_pos[0] - sc.token_teacher_pos[0]).detach()
            metrics["gap_tokens"] = _gap_text(policy.tokenizer, pairs[0][0].action_ids, gaps)
        return loss, metrics

    def after_step(self, step: int, policy: Policy) -> None:
        if self.config.teacher_refresh and step % self.config.teacher_refresh == 0:
            policy.refresh_teacher()


def _gap_text(tokenizer, ids: list[int], gaps: torch.Tensor, k: int = 5) -> str:
    """The k tokens of y+ with the largest |log π_θ − log π_T|, as ``'token'(gap)``."""
    k = min(k, len(ids))
    top = torch.topk(gaps.abs(), k).indices.tolist()
    return " ".join(f"{tokenizer.decode([ids[i]])!r}({gaps[i].item():+.2f})" for i in sorted(top))
