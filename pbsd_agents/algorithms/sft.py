r"""SFT on teacher decodes, a baseline: rejection-sampling fine-tuning or sequence-level distillation.

The teacher (privileged prompt, frozen weights) decodes each task at ``teacher_temperature``
(0 = greedy); the student is trained to reproduce those action tokens under the *student* prompt::

    L = − (1 / Σ |y|) Σ_{y ∈ D} Σ_{t ∈ action tokens of y} log π_θ(y_t | x, y_<t)

with D = the successful teacher decodes (``only_successful=True``: rejection-sampling fine-tuning)
or all of them (``False``: sequence-level knowledge distillation).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Policy
from .base import Algorithm, Batch, CollectPlan, mean_reward
from .scoring import action_logits


@dataclass
class SFTConfig:
    samples_per_task: int = 1
    teacher_temperature: float = 0.0
    only_successful: bool = True

    def __post_init__(self) -> None:
        if self.samples_per_task < 1 or self.teacher_temperature < 0:
            raise ValueError(f"samples_per_task >= 1 and teacher_temperature >= 0 required, got {self}")


class SFT(Algorithm):
    name = "sft"
    summed_metrics = ("num_used",)

    def plan(self) -> CollectPlan:
        return CollectPlan(teacher_samples=self.config.samples_per_task, teacher_temperature=self.config.teacher_temperature)

    def select(self, batch: Batch):
        teacher = [t for g in batch.groups for t in g.teacher if t.num_action_tokens]
        return [t for t in teacher if t.success] if self.config.only_successful else teacher

    def loss(self, batch: Batch, policy: Policy):
        teacher = [t for g in batch.groups for t in g.teacher]
        used = self.select(batch)
        metrics: dict = {
            "teacher_reward": mean_reward(teacher),
            "num_used": len(used),
        }
        if not used:
            return None, metrics
        with policy.student() as model:
            out = action_logits(model, [t.student_view() for t in used], self.pad_id)
        nll = -out.token_logprobs()
        return nll.mean(), metrics
