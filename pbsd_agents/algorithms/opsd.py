r"""OPSD: On-Policy Self-Distillation (arXiv 2601.18734), a baseline.

On student samples y ~ π_θ(· | x), per action token t, a divergence between the student's and the
teacher's full next-token distributions::

    S = π_θ(· | x, y_<t)            T = π_T(· | x, c, y_<t)        M = β·T + (1−β)·S
    D_β = β·KL(T ‖ M) + (1−β)·KL(S ‖ M)          (β = 0: KL(T ‖ S),  β = 1: KL(S ‖ T))
    L = mean over action tokens of D_β

β = 0.5 is the paper's JSD; the β = 0 / 1 ends follow TRL's GKD convention (forward / reverse KL).
``clip`` caps each token's divergence so a few outlier tokens cannot dominate; ``top_k`` restricts
both distributions to the teacher's k most likely tokens (renormalised). ``teacher="frozen"`` uses
θ0 (a live teacher collapsed in the prototype); ``"live"`` uses the current weights
without gradient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import Policy
from .base import Algorithm, Batch, CollectPlan, mean_reward
from .scoring import action_logits

TEACHERS = ("frozen", "live")


@dataclass
class OPSDConfig:
    beta: float = 0.5
    samples_per_task: int = 1
    clip: float = 0.0  # per-token cap on D_β; 0 = none
    top_k: int = 0  # 0 = full vocabulary
    teacher: str = "frozen"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {self.teacher!r}")
        if self.samples_per_task < 1 or self.top_k < 0 or self.clip < 0:
            raise ValueError(f"samples_per_task >= 1, top_k >= 0, clip >= 0 required, got {self}")


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """D_β per row of ``[N, V]`` logits (see the module docstring).

    Example:
        >>> s, t = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])
        >>> kl_ts = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum()
        >>> bool(torch.isclose(generalized_jsd(s, t, 0.0)[0], kl_ts))
        True
        >>> abs(float(generalized_jsd(s, s, 0.5)[0])) < 1e-6
        True
    """
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    log_t = F.log_softmax(teacher_logits.float(), dim=-1)
    if beta == 0.0:
        return F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)  # KL(T‖S)
    if beta == 1.0:
        return F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)  # KL(S‖T)
    log_m = torch.logsumexp(
        torch.stack([log_t + torch.log(torch.tensor(beta)), log_s + torch.log(torch.tensor(1 - beta))]), dim=0
    )
    kl_t = F.kl_div(log_m, log_t, reduction="none", log_target=True).sum(-1)  # KL(T‖M)
    kl_s = F.kl_div(log_m, log_s, reduction="none", log_target=True).sum(-1)  # KL(S‖M)
    return beta * kl_t + (1 - beta) * kl_s


class OPSD(Algorithm):
    name = "opsd"
    summed_metrics = ("action_tokens",)
    metric_weights = {"divergence": "action_tokens", "clipped_frac": "action_tokens"}  # means over tokens
    progress_metrics = ("student_reward",)

    def plan(self) -> CollectPlan:
        return CollectPlan(student_samples=self.config.samples_per_task)

    def loss(self, batch: Batch, policy: Policy):
        cfg = self.config
        trajs = [t for g in batch.groups for t in g.student if t.num_action_tokens]
        metrics: dict = {"student_reward": mean_reward([t for g in batch.groups for t in g.student])}
        if not trajs:
            return None, metrics
        with policy.student() as model:
            s = action_logits(model, [t.student_view() for t in trajs], self.pad_id)
        t0 = time.perf_counter()
        with torch.no_grad():
            if cfg.teacher == "frozen":
                with policy.teacher() as teacher:
                    t = action_logits(teacher, [t.teacher_view() for t in trajs], self.pad_id)
            else:
                t = action_logits(policy.model, [t.teacher_view() for t in trajs], self.pad_id)
        metrics["teacher_score_s"] = time.perf_counter() - t0
        s_logits, t_logits = s.logits, t.logits
        if cfg.top_k:
            idx = torch.topk(t_logits, min(cfg.top_k, t_logits.shape[-1]), dim=-1).indices
            s_logits, t_logits = torch.gather(s_logits, 1, idx), torch.gather(t_logits, 1, idx)
        div = generalized_jsd(s_logits, t_logits, cfg.beta)
        metrics["divergence"] = div.mean().item()
        metrics["action_tokens"] = div.numel()
        if cfg.clip:
            metrics["clipped_frac"] = (div > cfg.clip).float().mean().item()
            div = div.clamp(max=cfg.clip)
        return div.mean(), metrics
