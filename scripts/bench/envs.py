"""Section 3: environment steps/s with the oracle policy. :func:`time_oracle` also serves ``scripts/bench_envs.py``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import gymnasium

from .common import Sizes, now, table

TITLE = "environment steps/s with the oracle"
PROCEDURAL = ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0")
LOADERS = {  # env id -> (constructor argument, its path under --data-dir)
    "pbsd/BFCL-v0": ("data_path", "bfcl/BFCL_v3_simple.json"),
    "pbsd/GSM8K-v0": ("data_path", "gsm8k/train.jsonl"),
    "pbsd/TauRetail-v0": ("data_dir", "tau_bench/retail"),
}


def loader_kwargs(env_id: str, data_dir: str | Path | None) -> tuple[dict, str | None]:
    """``(constructor arguments, None)`` of ``env_id``, or ``({}, why it cannot run)`` when its data is missing."""
    if env_id not in LOADERS:
        return {}, None
    if data_dir is None:
        return {}, "no --data-dir given"
    name, rel = LOADERS[env_id]
    path = Path(data_dir) / rel
    return ({name: str(path)}, None) if path.exists() else ({}, f"no data at {path}")


class _Timer(gymnasium.Wrapper):
    """Adds up the seconds spent inside the env's own ``reset()`` and ``step()``."""

    def __init__(self, env):
        super().__init__(env)
        self.reset_s = self.step_s = 0.0

    def reset(self, **kwargs):
        t = now()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.reset_s += now() - t

    def step(self, action):
        t = now()
        try:
            return self.env.step(action)
        finally:
            self.step_s += now() - t


def time_oracle(env, reset: Callable[[int], dict], *, episodes: int, seconds: float = math.inf) -> dict:
    """Play oracle episodes ``i = 0, 1, ...`` (reset with ``reset(i)``: ``seed=``, ``options=``) until
    ``episodes`` are done or ``seconds`` have passed; return counts, successes and the time in
    ``step()``, in ``reset()`` and in all (the episodes' bookkeeping included)."""
    from pbsd_agents.episode import play_oracle

    timer = _Timer(env)
    n = steps = successes = 0
    t0 = now()
    while n < episodes and now() - t0 < seconds:
        ep = play_oracle(timer, **reset(n))
        n, steps, successes = n + 1, steps + ep.turns, successes + ep.success
    return {"episodes": n, "steps": steps, "successes": successes, "step_s": timer.step_s, "reset_s": timer.reset_s,
            "total_s": now() - t0}


def run(args, tok=None) -> dict:
    from pbsd_agents.envs.registry import make_env

    s = args.sizes
    rows = []
    for env_id in PROCEDURAL + tuple(LOADERS):
        kwargs, skipped = loader_kwargs(env_id, args.data_dir)
        if skipped:
            rows.append({"env": env_id, "skipped": skipped})
            continue
        t0 = now()
        env = make_env(env_id, **kwargs)
        make_s = now() - t0
        n = env.unwrapped.num_tasks
        r = time_oracle(env, lambda i: {"seed": args.seed, "options": {"index": i % n if n else i}},
                        episodes=s.env_max_episodes, seconds=s.env_seconds)
        env.close()
        episodes, wall = r["episodes"], r["total_s"]
        rows.append({"env": env_id, "kwargs": kwargs, "make_s": make_s, "num_tasks": n, "episodes": episodes,
                     "steps": r["steps"], "wall_s": wall, "steps_per_s": r["steps"] / wall, "episodes_per_s": episodes / wall,
                     "steps_per_episode": r["steps"] / max(episodes, 1), "reset_ms": 1000 * r["reset_s"] / max(episodes, 1),
                     "oracle_success": r["successes"] / max(episodes, 1),
                     "data_errors": len(getattr(env.unwrapped, "data_errors", {}) or {})})
    return {"rows": rows}


def report(r: dict, sizes: Sizes) -> str:
    out = ["## 3. Environment steps/s with the oracle policy", ""]
    out.append(
        f"`gymnasium.make(id, **kwargs)` (with gymnasium's default wrappers), then episodes over task indices 0, 1, 2, ... "
        f"for up to {sizes.env_seconds:g} s (at most {sizes.env_max_episodes} episodes) per environment, played by "
        "`pbsd_agents.episode.play_oracle`: `reset`, then `step` with each of `env.unwrapped.oracle_actions()` until the "
        "episode ends. Steps/s counts `step` calls over the whole loop (resets included). Single-process, no model.")
    out.append("")
    rows = []
    for x in r["rows"]:
        if "skipped" in x:
            rows.append([f"`{x['env']}`", "skipped: " + x["skipped"], None, None, None, None, None, None])
            continue
        rows.append([f"`{x['env']}`", x["num_tasks"] if x["num_tasks"] is not None else "∞", round(x["make_s"], 3),
                     round(x["steps_per_s"], 1), round(x["episodes_per_s"], 1), round(x["steps_per_episode"], 2),
                     round(x["reset_ms"], 3), round(x["oracle_success"], 3)])
    out.append(table(["env", "tasks", "make (s)", "steps/s", "episodes/s", "steps/episode", "reset (ms)", "oracle success"], rows))
    out.append("")
    flagged = [x for x in r["rows"] if x.get("data_errors") and x.get("oracle_success", 1.0) < 1.0]
    for x in flagged:
        out.append(f"`{x['env']}`: the loader flags {x['data_errors']} task(s) of this split as data errors (a gold "
                   "answer that cannot be met, e.g. a gold function missing from the task's functions); they always "
                   "score 0, so the oracle's success is below 1 when they are among the episodes run.")
        out.append("")
    data = [x for x in r["rows"] if x.get("kwargs")]
    if data:
        out.append("Loader arguments: " + "; ".join(f"`{x['env']}`: " + ", ".join(f"{k}=`{LOADERS[x['env']][1]}`"
                                                                                     for k in x["kwargs"]) for x in data)
                   + " (under `--data-dir`).")
        out.append("")
    return "\n".join(out)
