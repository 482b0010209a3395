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
means; teacher frozen at θ0; y+ sampled at the student's temperature; one y- per y+, pushed down
whatever its reward. Options, each off by default:

- ``teacher_temperature``: decoding temperature of y+ (0 = greedy).
- ``pair_filter="verifier"``: the trajectory with the higher environment reward is preferred,
  whichever produced it; pairs with equal rewards are dropped.
- ``teacher_refresh=k``: every k steps the teacher becomes the current student.
- ``length_normalize``: h divided by the number of action tokens.
- ``nll_coef``: adds ``nll_coef`` × the token-mean NLL of y+ under the student prompt.
- ``pairs_per_task``: several y+ per task (each with its own ``group_size`` student samples).
- ``group_size=K``: K student samples y-_1..y-_K per y+, i.e. K pairs (y+, y-_j) sharing one y+.
- ``push_down``: what the y- side of the loss does (below).

Push-down variants. The gradient of the paper's loss is ``∇L = −w β (∇log π_θ(y+) − ∇log π_θ(y-))``
with ``w = σ(−β(h(y+) − h(y-)))`` (the teacher term of h has no gradient). When every pair sits in the
linear regime (w ≈ 1 for all pairs, as measured in docs/study-512/RESULTS.md) the y- half is a score function
of the student's own sample, ``E_{y~π_θ}[∇log π_θ(y)] = 0``: noise without direction. Two variants
give it one. Below, pairs p = 1..P of a batch; y-_p is drawn from π_θ(· | x); r_p ∈ [0, 1] is its
environment reward; sg is stop-gradient; the policy-gradient readings hold for y- sampled at
temperature 1 (the default), where the sampling distribution is the π_θ that h is computed with.

``push_down="all"`` (paper, default)::

    ℓ_p = − log σ( β (h(y+_p) − h(y-_p)) ),        L = (1/P) Σ_p ℓ_p

``push_down="failed"``: verifier-weighted negatives; a y- is pushed down by how much it failed::

    ℓ_p = − log σ( β (h(y+_p) − (1 − r_p) h(y-_p)) ),    L = (1/P) Σ_p ℓ_p
    y- part of −∇L:  −(1/P) Σ_p w_p β (1 − r_p) ∇log π_θ(y-_p)
    w_p = σ(−β (h(y+_p) − (1 − r_p) h(y-_p)))

  A successful sample (r = 1) drops out of the push-down (its pair becomes ``−log σ(β h(y+))``); a
  failed one (r = 0) is the paper's pair. With w_p the same for all pairs (the linear regime), the y-
  part of the descent step is β w E[−(1 − r) ∇log π_θ(y)] = β w (E[r ∇log π_θ(y)] − E[∇log π_θ(y)])
  = β w ∇_θ E_{y~π_θ}[r]: REINFORCE on the environment reward with the constant baseline 1. It needs
  ``pair_filter="none"`` (y- must be the student's own sample for this reading).

``push_down="group_baseline"`` (``group_size`` K ≥ 2): the score-function half of the gradient of
PBSD's own on-policy objective ``J(θ) = E_{y+~π_T} E_{y-~π_θ}[ℓ]``. Because y- is drawn from π_θ,
``∇J = E[∇_θ ℓ] + E[ℓ ∇log π_θ(y-)]``; autograd on fixed samples gives only the first (pathwise)
term, the paper's gradient. The second, estimated with the group mean of ℓ over the K samples of the
same y+ as the baseline::

    ℓ_p = − log σ( β (h(y+_p) − h(y-_p)) )
    A_p = ℓ_p − (1/K) Σ_{q: y+_q = y+_p} ℓ_q                          (a number: no gradient)
    L   = (1/P) Σ_p [ ℓ_p + sg(A_p) · (log π_θ(y-_p) − sg(log π_θ(y-_p))) ]
    ∇L  = (1/P) Σ_p [ ∇ℓ_p + A_p ∇log π_θ(y-_p) ]

  The added term is zero in value (so the loss reads as the paper's mean ℓ) and its gradient is
  A_p ∇log π_θ(y-_p), where log π_θ(y-) is the plain sum over action tokens (the sampling
  distribution's score, also with ``length_normalize``). With K samples per y+,
  E[A_p ∇log π_θ(y-_p)] = ((K − 1)/K) E[ℓ ∇log π_θ(y-)] (the other samples' ℓ are independent of
  y-_p): the score-function term, scaled. In the linear regime ℓ ≈ −β (h(y+) − h(y-)), so A_p ≈
  β (h(y-_p) − mean_q h(y-_q)) and the y- part of the descent step is, in expectation,
  −β ((K − 1)/K) E[h(y-) ∇log π_θ(y-)] = −β ((K − 1)/K) ∇_θ KL(π_θ(·|x) ‖ π_T(·|x, c)) (the KL's
  other term, E[∇_θ h] = E[∇log π_θ], is 0): it pushes down the samples the student over-rates
  relative to the teacher (log-ratio above the group's) and pushes up the others, i.e.
  sequence-level reverse-KL distillation towards the teacher, instead of zero-mean noise. Where the
  pair loss saturates (w → 0 as h(y+) − h(y-) grows) A_p → 0 and the term fades with
  the pathwise one. Needs ``pair_filter="none"``.

Metrics: ``h_pos`` and ``h_neg`` (their difference's mean is minus the Jeffreys gap between student
and teacher: the real progress signal), ``margin`` = h(y+) − h(y-) and ``pair_accuracy`` (both stay
negative/low until the student matches the teacher; they are not success signals), ``logp_pos`` and
``logp_neg`` (log π_θ of each side, to see likelihood displacement), ``teacher_reward``,
``identical_pairs``, ``num_pairs``, and every ``log_gap_every`` steps ``gap_tokens``: the tokens of
one pair with the largest per-token gap log π_θ − log π_T. With ``push_down="failed"``:
``negatives_kept`` (y- with r < 1, whose push-down is on) and ``neg_weight`` (mean 1 − r). With
``push_down="group_baseline"``: ``negatives_kept`` (y- in groups of at least two, whose score term
can be non-zero), ``h_neg_group_std`` (mean within-group std of h(y-): the spread the direction comes
from) and ``neg_advantage_abs`` (mean |A_p|).
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
PUSH_DOWNS = ("all", "failed", "group_baseline")


@dataclass
class PBSDConfig:
    beta: float = 0.1
    pairs_per_task: int = 1
    group_size: int = 1  # student samples y- per teacher sample y+
    push_down: str = "all"  # all (paper), failed, group_baseline: see the module docstring
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
        if self.push_down not in PUSH_DOWNS:
            raise ValueError(f"push_down must be one of {', '.join(PUSH_DOWNS)}, got {self.push_down!r}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.push_down == "group_baseline" and self.group_size < 2:
            raise ValueError(f"push_down=group_baseline needs group_size >= 2 (the baseline is the group's mean), "
                             f"got {self.group_size}")
        if self.push_down != "all" and self.pair_filter != "none":
            # Both variants read y- as the student's own sample; the verifier filter may swap in the teacher's.
            raise ValueError(f"push_down={self.push_down} needs pair_filter=none, got {self.pair_filter!r}")
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
    summed_metrics = ("num_pairs", "identical_pairs", "negatives_kept")
    metric_weights = {k: "num_pairs" for k in ("margin", "h_pos", "h_neg", "pair_accuracy", "logp_pos", "logp_neg", "nll_pos",
                                               "neg_weight", "h_neg_group_std", "neg_advantage_abs")}
    progress_metrics = ("margin", "student_reward")
    printed_metrics = {"gap_tokens": "largest per-token gaps in a pair"}

    def plan(self) -> CollectPlan:
        n, k = self.config.pairs_per_task, self.config.group_size
        return CollectPlan(student_samples=n * k, teacher_samples=n, teacher_temperature=self.config.teacher_temperature)

    def pairs(self, batch: Batch):
        """(chosen, rejected) trajectories per the pair filter: each y+ with its ``group_size`` y-, in order."""
        k, out = self.config.group_size, []
        for g in batch.groups:
            for pos, neg in ((pos, neg) for i, pos in enumerate(g.teacher) for neg in g.student[i * k:(i + 1) * k]):
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
        """Student and teacher log-probs of both sides of every pair, and h(y+), h(y-).

        A y+ shared by several pairs (``group_size`` > 1) is scored once.
        """
        slot: dict[int, int] = {}
        trajs = []
        for t in (t for pair in pairs for t in pair):
            if id(t) not in slot:
                slot[id(t)] = len(trajs)
                trajs.append(t)
        with policy.student() as model:
            lp_student, tok_student = sequence_logprobs(model, [t.student_view() for t in trajs], self.pad_id)
        t0 = time.perf_counter()
        with torch.no_grad(), policy.teacher() as teacher:
            lp_teacher, tok_teacher = sequence_logprobs(teacher, [t.teacher_view() for t in trajs], self.pad_id)
        teacher_s = time.perf_counter() - t0
        h = lp_student - lp_teacher
        if self.config.length_normalize:
            h = h / torch.tensor([t.num_action_tokens for t in trajs], dtype=h.dtype, device=h.device)
        pos = torch.tensor([slot[id(p)] for p, _ in pairs], device=h.device)
        neg = torch.tensor([slot[id(n)] for _, n in pairs], device=h.device)
        return PairScores(
            pairs=pairs, logp_pos=lp_student[pos], logp_neg=lp_student[neg], h_pos=h[pos], h_neg=h[neg],
            token_logp_pos=[tok_student[i] for i in pos.tolist()],
            token_teacher_pos=[tok_teacher[i] for i in pos.tolist()],
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
        h_neg = sc.h_neg
        if cfg.push_down == "failed":
            push = torch.tensor([1.0 - n.reward for _, n in pairs], dtype=h_neg.dtype, device=h_neg.device)
            h_neg = push * h_neg
            metrics.update(negatives_kept=int((push > 0).sum()), neg_weight=push.mean().item())
        per_pair = pbsd_loss(sc.h_pos, h_neg, cfg.beta)
        loss = per_pair.mean()
        if cfg.push_down == "group_baseline":
            loss = loss + self._score_function_term(per_pair, sc, metrics)
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

    def _score_function_term(self, per_pair: torch.Tensor, sc: PairScores, metrics: dict) -> torch.Tensor:
        """(1/P) Σ_p sg(A_p)·(log π_θ(y-_p) − sg(log π_θ(y-_p))): value 0, gradient the score term of ∇J."""
        ids: dict[int, int] = {}
        group = torch.tensor([ids.setdefault(id(p), len(ids)) for p, _ in sc.pairs], device=per_pair.device)
        size = torch.bincount(group, minlength=len(ids)).to(per_pair.dtype)

        def group_mean(values: torch.Tensor) -> torch.Tensor:  # per pair: the mean over its y+'s group
            return (torch.zeros_like(size).index_add(0, group, values) / size)[group]

        ell, h = per_pair.detach(), sc.h_neg.detach()
        advantage = ell - group_mean(ell)
        several = size[group] > 1
        metrics.update(
            negatives_kept=int(several.sum()),
            h_neg_group_std=group_mean((h - group_mean(h)) ** 2).sqrt()[several].mean().item() if several.any() else 0.0,
            neg_advantage_abs=advantage.abs().mean().item(),
        )
        return (advantage * (sc.logp_neg - sc.logp_neg.detach())).mean()

    def after_step(self, step: int, policy: Policy) -> None:
        if self.config.teacher_refresh and step % self.config.teacher_refresh == 0:
            policy.refresh_teacher()


def _gap_text(tokenizer, ids: list[int], gaps: torch.Tensor, k: int = 5) -> str:
    """The k tokens of y+ with the largest |log π_θ − log π_T|, as ``'token'(gap)``."""
    k = min(k, len(ids))
    top = torch.topk(gaps.abs(), k).indices.tolist()
    return " ".join(f"{tokenizer.decode([ids[i]])!r}({gaps[i].item():+.2f})" for i in sorted(top))
