"""Resumable grids of training runs, for studies (``scripts/compare_methods.py``, ``scripts/sweep_default.py``).

A grid is an ordered mapping ``name -> spec``; a study supplies ``run(spec) -> result`` (a dict),
usually built on :func:`train`. :func:`run_grid` saves each run's result as ``<results_dir>/<name>.json``
the moment it finishes, so a rerun skips the finished runs and retries the failed or interrupted
ones. ``jobs > 1`` runs that many at a time, each in its own spawned process; every run, in a process of its own
or not, gets one torch thread.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> results, failed = run_grid({"a": {"x": 1}, "b": {"x": 2}}, dict, d, quiet=True)
    >>> results["b"], failed
    ({'x': 2}, [])
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["run_grid", "train"]


def train(config: dict) -> tuple[dict, float]:
    """Train one run from ``TrainConfig`` fields; returns ``(summary, wall seconds)``.

    The run folder (``config["out"]``) is started afresh: a run without a saved result was interrupted.
    Without a ``threads`` of its own the run keeps the torch threads :func:`run_grid` gave it (one): the
    trainer's automatic count would see the cores idle at the moment the runs of a grid start together,
    and each run would take every core.
    """
    import torch

    from .trainer import TrainConfig, Trainer

    cfg = TrainConfig.from_dict({"threads": torch.get_num_threads(), **config})
    if cfg.out and Path(cfg.out).exists():
        shutil.rmtree(cfg.out)
    t0 = time.time()
    summary = Trainer(cfg).train()
    return summary, time.time() - t0


def run_grid(runs: Mapping[str, Any], run: Callable[[Any], dict], results_dir: str | Path, *, jobs: int = 1,
             describe: Callable[[str, dict], str] | None = None, quiet: bool = False) -> tuple[dict[str, dict], list[str]]:
    """Run every run of ``runs`` that has no result file yet; return ``({name: result}, failed names)``.

    ``run`` (a module-level function when ``jobs > 1``: it is pickled) gets the run's spec. A run that
    raises is reported and left without a result, so the next call retries it; the others go on.
    ``describe(name, result)`` is the progress line of a finished run.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path_of = {name: results_dir / f"{name}.json" for name in runs}
    left = [name for name in runs if not path_of[name].exists()]
    n_done = len(runs) - len(left)
    say(f"{n_done} of {len(runs)} runs already done; {len(left)} to run, {jobs} at a time")
    failed: list[str] = []

    def finished(name: str, result: dict | None, error: BaseException | None) -> None:
        nonlocal n_done
        if error is not None:  # one broken run must not lose the others; a rerun retries it
            failed.append(name)
            say(f"run {name} failed: {type(error).__name__}: {error}")
            return
        n_done += 1
        path_of[name].write_text(json.dumps(result, indent=1))
        say(f"[{n_done}/{len(runs)}] " + (describe(name, result) if describe else name))

    if jobs == 1:
        threads = _set_threads(1)  # as in the parallel case, so a run's wall time means the same with any --jobs
        try:
            for name in left:
                try:
                    result = run(runs[name])
                except Exception as exc:
                    finished(name, None, exc)
                else:
                    finished(name, result, None)
        finally:
            _set_threads(threads)
    elif left:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: a forked child inherits torch's thread-pool state and can hang
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_set_threads,
                                 initargs=(1,)) as pool:
            futures = {pool.submit(run, runs[name]): name for name in left}
            for f in as_completed(futures):
                error = f.exception()
                finished(futures[f], None if error else f.result(), error)
    if failed:
        say(f"{len(failed)} run(s) failed; run again to retry them")
    results = {name: json.loads(path_of[name].read_text()) for name in runs if path_of[name].exists()}
    return results, failed


def _set_threads(n: int | None) -> int | None:
    """Give this process ``n`` torch threads (a run gets one core, not all cores each); returns the count it
    replaced. ``None``, or no torch, changes nothing."""
    try:
        import torch
    except ImportError:
        return None
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    return old
