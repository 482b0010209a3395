r"""SFT, a baseline and a warm start: on teacher decodes, or on the environments' oracle demonstrations.

``source="teacher"`` (rejection-sampling fine-tuning or sequence-level distillation): the teacher
(privileged prompt, frozen weights) decodes each task at ``teacher_temperature`` (0 = greedy); the
student is trained to reproduce those action tokens under the *student* prompt.

``source="oracle"`` (offline SFT, the warm start before on-policy training): each task's oracle
turns, played against the env's real tools and rendered with the model's own chat template (see
:meth:`~pbsd_agents.rollout.Collector.demonstrations`); a share ``teacher_view_fraction`` of them is
shown in the teacher view (privileged context in the prompt), the rest in the student view. Fewer
student-view demonstrations leave a gap between the views for PBSD to close. ``envs`` (comma-separated
ids) takes the demonstrations from several envs in turn. Either way::

    L = − (1 / Σ |y|) Σ_{y ∈ D} Σ_{t ∈ action tokens of y} log π_θ(y_t | x, y_<t)

with x the prompt of the view y is shown in and D the successful trajectories
(``only_successful=True``: rejection-sampling fine-tuning) or all of them (``False``: sequence-level
knowledge distillation). Prompt and observation tokens (tool results) carry no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Policy
from .base import Algorithm, Batch, CollectPlan, mean_reward
from .scoring import action_logits

SOURCES = ("teacher", "oracle")


@dataclass
class SFTConfig:
    samples_per_task: int = 1
    teacher_temperature: float = 0.0
    only_successful: bool = True
    source: str = "teacher"  # teacher: the teacher's decodes; oracle: the envs' oracle demonstrations
    teacher_view_fraction: float = 0.5  # source=oracle: the share of demonstrations shown in the teacher view
    envs: str = ""  # source=oracle: comma-separated env ids the demonstrations come from (default: the run's env)

    def __post_init__(self) -> None:
        if self.samples_per_task < 1 or self.teacher_temperature < 0:
            raise ValueError(f"samples_per_task >= 1 and teacher_temperature >= 0 required, got {self}")
        if self.source not in SOURCES:
            raise ValueError(f"sft source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if not 0 <= self.teacher_view_fraction <= 1:
            raise ValueError(f"teacher_view_fraction must be in [0, 1], got {self.teacher_view_fraction}")
        if self.source == "oracle" and self.samples_per_task != 1:
            raise ValueError("source=oracle gives one demonstration per task: samples_per_task must be 1")
        if self.envs and self.source != "oracle":
            raise ValueError("envs applies to source=oracle only")
        from ..envs.registry import resolve_env_id

        for env_id in self.env_list:
            resolve_env_id(env_id)

    @property
    def env_list(self) -> tuple[str, ...]:
        return tuple(e.strip() for e in self.envs.split(",") if e.strip())


class SFT(Algorithm):
    name = "sft"
    summed_metrics = ("num_used", "num_teacher_view")

    def plan(self) -> CollectPlan:
        cfg = self.config
        if cfg.source == "oracle":
            return CollectPlan(demonstrations=True, teacher_view_fraction=cfg.teacher_view_fraction,
                               demo_envs=cfg.env_list)
        return CollectPlan(teacher_samples=cfg.samples_per_task, teacher_temperature=cfg.teacher_temperature)

    def select(self, batch: Batch):
        pool = batch.trajectories if self.config.source == "oracle" else [t for g in batch.groups for t in g.teacher]
        pool = [t for t in pool if t.num_action_tokens]
        return [t for t in pool if t.success] if self.config.only_successful else pool

    def loss(self, batch: Batch, policy: Policy):
        used = self.select(batch)
        if self.config.source == "oracle":
            metrics: dict = {"demo_reward": mean_reward(batch.trajectories), "num_used": len(used),
                             "num_teacher_view": sum(t.source == "teacher" for t in used)}
            # a demonstration is learnt in the view it is shown in; a teacher decode always under the student prompt
            views = [t.view(t.source) for t in used]
        else:
            metrics = {"teacher_reward": mean_reward([t for g in batch.groups for t in g.teacher]), "num_used": len(used)}
            views = [t.student_view() for t in used]
        if not used:
            return None, metrics
        with policy.student() as model:
            out = action_logits(model, views, self.pad_id)
        nll = -out.token_logprobs()
        return nll.mean(), metrics
