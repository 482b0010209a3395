"""A run folder's logs: ``metrics.jsonl``, ``eval.jsonl``, the trackers of ``--report-to`` (see
:mod:`~pbsd_agents.trackers`), and messages on stderr.

One JSON object per line; a line cut by a kill is dropped when read. On resume, :meth:`RunLog.rewind`
drops what was written after the restored checkpoint, so the files read as one uninterrupted run.
While a run writes to a folder it holds the folder's lock (``.lock``, with the writer's pid), so a
second run on the same folder stops with a one-line error instead of interleaving its logs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on this platform: runs are not locked
    fcntl = None

__all__ = ["RunLog", "read_jsonl"]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines log; reading stops at a line cut by a kill (everything before it is good)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the lines after it are still good
            if isinstance(row, dict):
                out.append(row)
    return out


class RunLog:
    """Append metrics and evaluations to a run folder (and its trackers); print messages when ``progress``.

    ``config`` (the run's options) is what the trackers record as the run's config. ``writer=False``
    (the other ranks of a multi-process run) reads the folder but writes and prints nothing."""

    def __init__(self, out: Path, *, progress: bool = True, report_to: str = "none", config: dict | None = None,
                 writer: bool = True):
        self.out = Path(out)
        self.writer = writer
        self.progress = progress and writer
        self.report_to = report_to
        self.config = config or {}
        self._trackers = None
        self._lock = None

    def open(self) -> None:
        """Create the folder and take its lock (a ``FileExistsError`` names the run that holds it)."""
        if not self.writer:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if fcntl is not None and self._lock is None:
            lock = open(self.out / ".lock", "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                raise FileExistsError(f"{self.out} is being written by another run ({holder}); "
                                      "wait for it to end or choose another --out") from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            lock.flush()
            self._lock = lock
        if self._trackers is None:
            from .trackers import open_trackers

            self._trackers = open_trackers(self.report_to, self.out, self.config)

    def metrics(self, row: dict) -> None:
        self._append("metrics.jsonl", row, "")

    def eval(self, row: dict) -> None:
        self._append("eval.jsonl", row, "eval/")

    def eval_at(self, step: int) -> dict | None:
        return next((r for r in read_jsonl(self.out / "eval.jsonl") if r.get("step") == step), None)

    def rewind(self, step: int) -> None:
        """Drop rows after ``step`` (and repeated evaluations of one step)."""
        if not self.writer:
            return
        for name in ("metrics.jsonl", "eval.jsonl"):
            rows, seen = [], set()
            for r in read_jsonl(self.out / name):
                if not isinstance(r.get("step"), int):
                    continue  # not a row of this kit's
                if r["step"] <= step and not (name == "eval.jsonl" and r["step"] in seen):
                    seen.add(r.get("step"))
                    rows.append(r)
            (self.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write(self, name: str, text: str) -> None:
        if self.writer:
            (self.out / name).write_text(text)

    def print(self, msg: str) -> None:
        if self.progress:
            print(msg, file=sys.stderr, flush=True)

    def clear(self) -> None:
        """Remove the logs (a run that starts over)."""
        if not self.writer:
            return
        for name in ("metrics.jsonl", "eval.jsonl", "summary.json"):
            (self.out / name).unlink(missing_ok=True)

    def close(self) -> None:
        if self._trackers is not None:
            self._trackers.close()
            self._trackers = None
        if self._lock is not None:
            self._lock.close()  # closing releases the lock
            self._lock = None

    def _append(self, name: str, row: dict, prefix: str) -> None:
        if not self.writer:
            return
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if self._trackers is not None:  # the file first: a tracker's failure never costs a row
            self._trackers.log(row, row["step"], prefix)
