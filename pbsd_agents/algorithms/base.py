"""The loss interface every algorithm implements.

An algorithm says what it needs collected per task (:class:`CollectPlan`) and turns a
:class:`Batch` of trajectories, grouped by task, into ``(loss, metrics)``. The trainer does the
rest (sampling tasks, collection, optimisation, evaluation), so algorithms are compared on equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models import Policy
from ..trajectory import Trajectory


@dataclass
class CollectPlan:
    """What to collect per task for one step.

    ``teacher_temperature=None`` samples the teacher at the student's temperature; 0 is greedy.
    ``demonstrations=True`` asks for the oracle's episodes instead of samples (offline SFT): one per
    task, from the envs of ``demo_envs`` in turn (empty: the run's env), each shown in the teacher
    view with probability ``teacher_view_fraction`` and in the student view otherwise.
    """

    student_samples: int = 0
    teacher_samples: int = 0
    teacher_temperature: float | None = None
    demonstrations: bool = False
    teacher_view_fraction: float = 0.0
    demo_envs: tuple[str, ...] = ()


@dataclass
class TaskGroup:
    """The trajectories of one task in a batch."""

    index: int | None
    student: list[Trajectory] = field(default_factory=list)
    teacher: list[Trajectory] = field(default_factory=list)


@dataclass
class Batch:
    groups: list[TaskGroup]
    temperature: float = 1.0  # the student's sampling temperature (importance ratios need it)
    step: int = 0

    @property
    def trajectories(self) -> list[Trajectory]:
        return [t for g in self.groups for t in g.student + g.teacher]


def mean_reward(trajectories: list[Trajectory]) -> float:
    """Mean environment reward of some trajectories (0.0 for none); every algorithm logs it."""
    return sum(t.reward for t in trajectories) / len(trajectories) if trajectories else 0.0


class Algorithm:
    """Base class: subclasses set ``name``, take a config dataclass, implement ``plan`` and ``loss``.

    ``loss`` returns ``(None, metrics)`` when the batch holds nothing to learn from (no pairs, no
    successful teacher sample); the trainer skips and counts such steps.

    Subclasses declare how the trainer treats their metrics: ``summed_metrics`` are counts, summed
    over a step's micro-batches (every other number is averaged); ``progress_metrics`` show in the
    progress bar beside the loss; ``printed_metrics`` maps a (text) metric to the label it is printed
    under whenever a step reports it.
    """

    name = "base"
    summed_metrics: tuple[str, ...] = ()
    progress_metrics: tuple[str, ...] = ()
    printed_metrics: dict[str, str] = {}

    def __init__(self, config, pad_id: int = 0):
        self.config = config
        self.pad_id = pad_id

    def plan(self) -> CollectPlan:
        raise NotImplementedError

    def loss(self, batch: Batch, policy: Policy) -> tuple[torch.Tensor | None, dict]:
        raise NotImplementedError

    def after_step(self, step: int, policy: Policy) -> None:
        """Hook called after each optimizer step (e.g. PBSD's teacher refresh)."""

    @classmethod
    def combine_metrics(cls, parts: dict[str, list]) -> dict:
        """One step's metrics from each micro-batch's values: summed, averaged, or (text) the first.

        Example:
            >>> class Counting(Algorithm):
            ...     summed_metrics = ("num_pairs",)
            >>> Counting.combine_metrics({"num_pairs": [2, 3], "margin": [1.0, 2.0], "gap_tokens": ["'a'(+1.00)"]})
            {'num_pairs': 5, 'margin': 1.5, 'gap_tokens': "'a'(+1.00)"}
        """
        out = {}
        for k, vs in parts.items():
            nums = [v for v in vs if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if nums and len(nums) == len(vs):
                out[k] = sum(nums) if k in cls.summed_metrics else sum(nums) / len(nums)
            elif vs:
                out[k] = vs[0]
        return out
