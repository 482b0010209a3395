"""A run folder's logs: ``metrics.jsonl``, ``eval.jsonl``, TensorBoard, and messages on stderr.

One JSON object per line; a line cut by a kill is dropped when read. On resume, :meth:`RunLog.rewind`
drops what was written after the restored checkpoint, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["RunLog", "read_jsonl"]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines log; reading stops at a line cut by a kill (everything before it is good)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


class RunLog:
    """Append metrics and evaluations to a run folder (and TensorBoard); print messages when ``progress``."""

    def __init__(self, out: Path, *, progress: bool = True, report_to: str = "none"):
        self.out = Path(out)
        self.progress = progress
        self.report_to = report_to
        self._writer = None

    def open(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.report_to == "tensorboard" and self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError("--report-to tensorboard needs the tensorboard package: "
                                   "pip install 'pbsd-agents[tensorboard]'") from None
            self._writer = SummaryWriter(str(self.out / "tensorboard"))

    def metrics(self, row: dict) -> None:
        self._append("metrics.jsonl", row, "train")

    def eval(self, row: dict) -> None:
        self._append("eval.jsonl", row, "eval")

    def eval_at(self, step: int) -> dict | None:
        return next((r for r in read_jsonl(self.out / "eval.jsonl") if r.get("step") == step), None)

    def rewind(self, step: int) -> None:
        """Drop rows after ``step`` (and repeated evaluations of one step)."""
        for name in ("metrics.jsonl", "eval.jsonl"):
            rows, seen = [], set()
            for r in read_jsonl(self.out / name):
                if r.get("step", 0) <= step and not (name == "eval.jsonl" and r["step"] in seen):
                    seen.add(r.get("step"))
                    rows.append(r)
            (self.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write(self, name: str, text: str) -> None:
        (self.out / name).write_text(text)

    def print(self, msg: str) -> None:
        if self.progress:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _append(self, name: str, row: dict, tag: str) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if self._writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._writer.add_scalar(f"{tag}/{k}", v, row["step"])
