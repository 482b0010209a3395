"""Experiment trackers (``--report-to``): TensorBoard, Weights & Biases, Trackio.

Each tracker is a small class with ``log(row, step)`` and ``close()``; :class:`~pbsd_agents.runlog.RunLog`
hands every metrics row and every eval row to each one. A metrics row is logged under its
``metrics.jsonl`` names, an eval row under ``eval/`` + its ``eval.jsonl`` names; nested values are
flattened with ``/`` (``eval/per_category/simple/success``, ``eval/success_ci/low``). The run's
config is the tracker's config (TensorBoard: a text summary).

The tracker packages are optional extras, imported only when a run opens its trackers; this module
itself imports nothing heavy, so :meth:`TrainConfig.validate` can check ``report_to`` (names and
installed packages) before the model loads.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["TRACKERS", "parse_report_to", "flatten", "open_trackers"]

# name -> (import name checked before the run starts, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}
PROJECT = "pbsd-agents"


def parse_report_to(value: str) -> list[str]:
    """The trackers named by ``value`` ("none", one name or several comma-separated), checked to be
    known and installed; a one-line ``ValueError`` otherwise."""
    names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
    if not names or names == ["none"]:
        return []
    valid = ", ".join(["none", *TRACKERS])
    for name in names:
        if name not in TRACKERS:
            raise ValueError(f"unknown report_to {name!r}; valid choices: {valid} (comma-separated for several)")
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"--report-to {name} needs the {module} package: pip install 'pbsd-agents[{extra}]'")
    return list(dict.fromkeys(names))  # "wandb,wandb" opens one


def flatten(row: dict, prefix: str = "", *, top: bool = True) -> dict[str, float]:
    """The numbers of ``row`` under flat ``/``-joined names; ``step``, strings and ``None`` left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if key == "step" and top:
            continue  # the step is the tracker's x-axis, not a series
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, dict):
            out.update(flatten(value, name + "/", top=False))
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            # a 95 % interval is [low, high]; other lists by position
            labels = ("low", "high") if key.endswith("_ci") and len(value) == 2 else range(len(value))
            out.update({f"{name}/{label}": v for label, v in zip(labels, value)})
    return out


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``)."""

    name = "tensorboard"

    def __init__(self, out: Path, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out / "tensorboard"))
        # hparams would open a second event file per run; the config as text reads the same in the UI
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)

    def log(self, values: dict, step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run named after the run folder (files under ``RUN/wandb`` unless ``WANDB_DIR``);
    ``WANDB_MODE=offline`` keeps it local, ``WANDB_PROJECT`` picks the project."""

    name = "wandb"

    def __init__(self, out: Path, run_name: str, config: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run_name, config=config,
                              dir=os.environ.get("WANDB_DIR") or str(out), reinit="create_new")

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    """A Trackio run in its local store (``TRACKIO_DIR``, default ``HF_HOME/trackio``; ``trackio show``)."""

    name = "trackio"

    def __init__(self, out: Path, run_name: str, config: dict):
        import trackio

        # no dashboard and no system sampling threads: the run only writes its rows
        self.run = trackio.init(project=PROJECT, name=run_name, config=config, embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}


class Trackers:
    """The run's trackers: a row goes to each; one that fails is warned about once and dropped, so a
    tracker's outage never costs the run (``metrics.jsonl`` and ``eval.jsonl`` still hold every row)."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, row: dict, step: int, prefix: str = "") -> None:
        values = flatten(row, prefix)
        for tracker in list(self.trackers):
            try:
                tracker.log(values, step)
            except Exception as exc:  # noqa: BLE001 - any tracker error: keep training
                self._drop(tracker, f"failed to log step {step}", exc)

    def close(self) -> None:
        for tracker in list(self.trackers):
            try:
                tracker.close()
            except Exception as exc:  # noqa: BLE001
                self._drop(tracker, "failed to close", exc)
        self.trackers = []

    def _drop(self, tracker, what: str, exc: Exception) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"warning: {tracker.name} {what} ({first}); the run goes on without it", file=sys.stderr, flush=True)
        self.trackers.remove(tracker)


def open_trackers(report_to: str, out: Path, config: dict) -> Trackers:
    """Start the trackers ``report_to`` names for the run in ``out``; one that cannot start is a
    one-line ``ValueError`` (a setting to fix, e.g. no W&B key; this happens before the model loads)."""
    opened = []
    try:
        for name in parse_report_to(report_to):
            try:
                opened.append(CLASSES[name](Path(out), Path(out).name, config))
            except Exception as exc:  # noqa: BLE001 - e.g. wandb online without an API key
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                hint = "; WANDB_MODE=offline logs locally" if name == "wandb" else ""
                raise ValueError(f"--report-to {name}: could not start ({first}){hint}") from None
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)
