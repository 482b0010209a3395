"""Held-out evaluation: the one used by ``Trainer.evaluate`` and ``pbsd-agents eval``.

On the first ``num_tasks`` tasks of the eval split: greedy success (one decode per task), and with
``pass_k`` samples per task at ``temperature``, T=1 success and pass@k; beside each rate its 95%
Wilson interval, with the task as the unit (a task's k samples are not independent). Trajectories
whose env reported a ``category`` at reset are also broken down per category. Each result is one
dict, the row written to ``eval.jsonl``::

    step, trajectories, success, success_ci, success_t1, success_t1_ci, pass_at_k, pass_at_k_ci, k,
    mean_action_tokens, parse_error_rate, num_tasks, greedy_outcomes[, per_category: {category: the same keys}]

``greedy_outcomes`` is a string with one character per task, in task order: ``1`` where the greedy
decode succeeded, else ``0`` (a string, so trackers skip it; studies bootstrap and pair over tasks with it).

Sampling is seeded from ``seed`` (and the caller's RNG state restored after), so the same weights
give the same eval samples. In a multi-process run each rank evaluates every N-th task and the
results are gathered, so every rank returns the whole row.

When the categories are the Berkeley Function Calling Leaderboard's, the row also has ``bfcl``: its
overall scores from the greedy decodes, combined as the leaderboard combines them (``non_live``: the
unweighted mean of simple_python, multiple, parallel and parallel_multiple; ``live``: the four live
categories weighted by their tasks; ``multi_turn``: the unweighted mean of the four multi-turn
categories, task-level), plus ``multi_turn_turn_level`` (scored user turns passed / scored user turns).
Each gives ``accuracy``, ``num_tasks`` and the ``categories`` it was computed from; a summary whose
categories were not all evaluated says so in ``missing`` (the leaderboard would show it as N/A).

Example:
    >>> wilson_interval(8, 10)
    [0.4902, 0.9433]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Evaluation", "bfcl_overall", "format_table", "summarize", "wilson_interval"]

SEED_OFFSET = 7919  # eval sampling never shares a seed with a training step's


def wilson_interval(successes: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a success rate (``[0, 1]`` when ``n`` is 0), rounded to 4 digits."""
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _rate(outcomes: list, num_tasks: int) -> tuple[float, list[float]]:
    """The mean of some outcomes, and its interval counting ``num_tasks`` trials."""
    mean = sum(float(x) for x in outcomes) / len(outcomes) if outcomes else 0.0
    return mean, wilson_interval(mean * num_tasks, num_tasks)


def _category(t) -> str | None:
    return (getattr(t, "task_info", None) or {}).get("category")


def summarize(greedy: list, sampled: list[list], k: int, *, by_category: bool = True) -> dict:
    """The metrics of one task set: ``greedy`` has one trajectory per task, ``sampled`` k per task (or none)."""
    n = len(greedy)
    success, success_ci = _rate([t.success for t in greedy], n)
    out = {"success": success, "success_ci": success_ci, "success_t1": None, "success_t1_ci": None,
           "pass_at_k": None, "pass_at_k_ci": None, "k": k}
    if sampled:
        out["success_t1"], out["success_t1_ci"] = _rate([t.success for g in sampled for t in g], n)
        out["pass_at_k"], out["pass_at_k_ci"] = _rate([any(t.success for t in g) for g in sampled], n)
    turns = sum(t.turns for t in greedy) or 1
    out["mean_action_tokens"] = sum(t.num_action_tokens for t in greedy) / n if n else 0.0
    out["parse_error_rate"] = sum(t.num_parse_errors for t in greedy) / turns
    out["num_tasks"] = n
    categories = sorted({c for c in map(_category, greedy) if c is not None}) if by_category else []
    if categories:
        rows = list(zip(greedy, sampled or [[]] * len(greedy)))
        out["per_category"] = {
            c: summarize([g for g, _ in rows if _category(g) == c], [s for g, s in rows if _category(g) == c and s], k,
                         by_category=False)
            for c in categories
        }
        overall = bfcl_overall(out["per_category"], greedy)
        if overall:
            out["bfcl"] = overall
    return out


def bfcl_overall(per_category: dict, greedy: list) -> dict:
    """The leaderboard's overall scores for the BFCL categories in ``per_category`` (see the module docstring)."""
    from .envs.bfcl_package import MULTI_TURN_CATEGORIES, OVERALL

    out = {}
    for name, (how, members) in OVERALL.items():
        present = [c for c in members if c in per_category]
        if not present:
            continue
        counts = [per_category[c]["num_tasks"] for c in present]
        rates = [per_category[c]["success"] for c in present]
        if how == "unweighted":
            accuracy = sum(rates) / len(rates)
        else:
            accuracy = sum(r * n for r, n in zip(rates, counts)) / max(1, sum(counts))
        row = {"accuracy": accuracy, "how": how, "num_tasks": sum(counts), "categories": present}
        missing = [c for c in members if c not in per_category]
        if missing:
            row["missing"] = missing
        out[name] = row
    multi = [t for t in greedy if _category(t) in MULTI_TURN_CATEGORIES]
    if multi:
        scored = sum(int((t.task_info or {}).get("scored_turns", 0)) for t in multi)
        passed = sum(int((getattr(t, "outcome", None) or {}).get("turns_passed", 0)) for t in multi)
        out["multi_turn_turn_level"] = {"accuracy": passed / scored if scored else 0.0, "how": "turns",
                                        "num_turns": scored, "num_tasks": len(multi)}
    return out


def format_table(row: dict) -> str:
    """An evaluation row as a small text table: the overall rates, then each category, then BFCL's summaries."""
    def rate(v):
        return "  -  " if v is None else f"{v:.3f}"

    lines = [f"{'':34} {'tasks':>6} {'greedy':>7} {'T=1':>7} {'pass@k':>7}",
             f"{'all':34} {row['num_tasks']:>6} {rate(row['success']):>7} {rate(row['success_t1']):>7} {rate(row['pass_at_k']):>7}"]
    for c, r in (row.get("per_category") or {}).items():
        lines.append(f"  {c:32} {r['num_tasks']:>6} {rate(r['success']):>7} {rate(r['success_t1']):>7} {rate(r['pass_at_k']):>7}")
    labels = {"non_live": "BFCL non-live (unweighted mean)", "live": "BFCL live (weighted by tasks)",
              "multi_turn": "BFCL multi-turn, task-level (mean)", "multi_turn_turn_level": "BFCL multi-turn, turn-level"}
    for name, r in (row.get("bfcl") or {}).items():
        size = f"{r['num_turns']}t" if "num_turns" in r else r["num_tasks"]
        note = f"   (missing: {', '.join(r['missing'])})" if r.get("missing") else ""
        lines.append(f"{labels.get(name, name):34} {size:>6} {rate(r['accuracy']):>7}{note}")
    return "\n".join(lines)


@dataclass
class Evaluation:
    """What to evaluate on; :meth:`run` evaluates a collector's policy on it.

    ``num_tasks`` is capped at the split's size when the split is finite.
    """

    env: str
    env_kwargs: dict = field(default_factory=dict)
    num_tasks: int = 64
    pass_k: int = 0
    temperature: float = 1.0
    max_new_tokens: int = 160
    max_tokens: int = 512
    view: str = "student"
    seed: int = 0

    def __post_init__(self) -> None:
        from .envs.registry import count_tasks

        size = count_tasks(self.env, **self.env_kwargs)
        if size is not None:
            self.num_tasks = min(self.num_tasks, size)

    def run(self, collector, *, step: int = 0, trajectories: int = 0, parallel=None) -> tuple[dict, list]:
        """``(the eval.jsonl row, the greedy trajectories)``; ``parallel`` (a
        :class:`~pbsd_agents.parallel.Parallel`) splits the tasks between its ranks."""
        import torch

        rank, world = (parallel.rank, parallel.world_size) if parallel is not None else (0, 1)
        tasks = list(range(self.num_tasks))[rank::world]
        state = torch.random.get_rng_state()
        torch.manual_seed(self.seed + SEED_OFFSET + rank)  # the same eval samples whenever the weights are the same

        def collect():
            return (self._collect(collector, tasks, 0.0),
                    self._collect(collector, [i for i in tasks for _ in range(self.pass_k)], self.temperature))

        try:
            greedy, sampled = collect() if parallel is None else parallel.run(collect)
        finally:
            torch.random.set_rng_state(state)
        if world > 1:  # rank r holds tasks r, r + N, ...: interleave them back into task order
            shares = parallel.gather((greedy, sampled))
            greedy = [shares[i % world][0][i // world] for i in range(self.num_tasks)]
            k = self.pass_k
            sampled = [t for i in range(self.num_tasks) for t in shares[i % world][1][(i // world) * k : (i // world + 1) * k]]
        groups = [sampled[i : i + self.pass_k] for i in range(0, len(sampled), self.pass_k)] if sampled else []
        row = {"step": step, "trajectories": trajectories, **summarize(greedy, groups, self.pass_k)}
        row["greedy_outcomes"] = "".join("1" if t.success else "0" for t in greedy)
        return row, greedy

    def _collect(self, collector, tasks: list[int], temperature: float) -> list:
        if not tasks:
            return []
        return collector.collect(self.env, tasks, env_kwargs=self.env_kwargs, view=self.view, temperature=temperature,
                                 max_new_tokens=self.max_new_tokens, max_tokens=self.max_tokens)
