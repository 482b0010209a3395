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
    over a step's micro-batches (and processes); ``metric_weights`` maps an averaged metric to the
    count that weights it (a mean over pairs is weighted by each micro-batch's pairs); every other
    number is a plain mean; ``progress_metrics`` show in the progress bar beside the loss;
    ``printed_metrics`` maps a (text) metric to the label it is printed under whenever a step reports it.
    """

    name = "base"
    summed_metrics: tuple[str, ...] = ()
    metric_weights: dict[str, str] = {}
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
    def combine_metrics(cls, parts: list[dict]) -> dict:
        """One step's metrics from each micro-batch's (on every process): summed, averaged (weighted
        where ``metric_weights`` says), or (text) the first.

        Example:
            >>> class Counting(Algorithm):
            ...     summed_metrics = ("num_pairs",)
            ...     metric_weights = {"margin": "num_pairs"}
            >>> Counting.combine_metrics([{"num_pairs": 1, "margin": 1.0, "gap_tokens": "'a'(+1.00)"},
            ...                           {"num_pairs": 3, "margin": 2.0, "reward": 0.5}, {"num_pairs": 0, "reward": 1.0}])
            {'num_pairs': 4, 'margin': 1.75, 'gap_tokens': "'a'(+1.00)", 'reward': 0.75}
        """
        out = {}
        for k in dict.fromkeys(k for m in parts for k in m):
            have = [m for m in parts if k in m]
            vs = [m[k] for m in have]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vs):
                out[k] = vs[0]
            elif k in cls.summed_metrics:
                out[k] = sum(vs)
            else:
                w = [m.get(cls.metric_weights[k], 0) for m in have] if k in cls.metric_weights else [1] * len(vs)
                out[k] = sum(a * b for a, b in zip(w, vs)) / sum(w) if sum(w) > 0 else sum(vs) / len(vs)
        return out
