r"""GRPO: group-relative policy optimisation, a baseline that uses only the environment reward.

Per task, G student samples y_1..y_G with rewards r_i; each token of y_i gets the advantage
A_i = (r_i − mean(r)) / (std(r) + ε). With ρ_t = π_θ(y_t | ·) / π_old(y_t | ·), where π_old is the
distribution actually sampled from (the trajectory's recorded logprobs, at the sampling temperature)::

    L = − (1 / Σ_i |y_i|) Σ_i Σ_{t ∈ action tokens of y_i} min(ρ_t A_i, clip(ρ_t, 1−ε, 1+ε) A_i)

a token-level mean over the whole batch. Groups whose rewards are all equal carry no signal (A = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import Policy
from .base import Algorithm, Batch, CollectPlan
from .scoring import action_logits


@dataclass
class GRPOConfig:
    group_size: int = 4
    clip_eps: float = 0.2
    adv_eps: float = 1e-4

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (advantages are relative to the group), got {self.group_size}")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")


def group_advantages(rewards: list[float], eps: float = 1e-4) -> list[float]:
    """Group-normalised advantages.

    Example:
        >>> [round(a, 3) for a in group_advantages([1.0, 0.0, 0.0, 1.0])]
        [1.0, -1.0, -1.0, 1.0]
        >>> group_advantages([1.0, 1.0])
        [0.0, 0.0]
    """
    r = torch.tensor(rewards, dtype=torch.float64)
    std = r.std(unbiased=False)
    return ((r - r.mean()) / (std + eps)).tolist()


class GRPO(Algorithm):
    name = "grpo"
    summed_metrics = ("action_tokens",)
    metric_weights = {"clip_frac": "action_tokens", "ratio_mean": "action_tokens"}  # means over tokens
    progress_metrics = ("student_reward",)

    def plan(self) -> CollectPlan:
        return CollectPlan(student_samples=self.config.group_size)

    def loss(self, batch: Batch, policy: Policy):
        cfg = self.config
        trajs, advs = [], []
        rewards = [t.reward for g in batch.groups for t in g.student]
        for g in batch.groups:
            for t, a in zip(g.student, group_advantages([t.reward for t in g.student], cfg.adv_eps)):
                if t.num_action_tokens and a != 0.0:
                    trajs.append(t)
                    advs.append(a)
        metrics: dict = {
            "student_reward": sum(rewards) / max(len(rewards), 1),
            "informative_frac": len(trajs) / max(len(rewards), 1),
        }
        if not trajs:
            return None, metrics
        with policy.student() as model:
            out = action_logits(model, [t.student_view() for t in trajs], self.pad_id)
        logp = out.token_logprobs(batch.temperature)
        old = torch.tensor([lp for t in trajs for lp in t.action_logprobs], dtype=logp.dtype, device=logp.device)
        if old.numel() != logp.numel():
            raise ValueError("GRPO needs the sampling logprobs of every action token (collect with an engine that records them)")
        adv = torch.tensor(advs, dtype=logp.dtype, device=logp.device)[out.seq]
        ratio = torch.exp(logp - old)
        clipped = torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)
        metrics["clip_frac"] = ((ratio - clipped).abs() > 0).float().mean().item()
        metrics["ratio_mean"] = ratio.mean().item()
        metrics["action_tokens"] = ratio.numel()
        return per_token.mean(), metrics
