"""Measure what `pbsd-agents train` should default to: a grid of (env, lr, beta, seed) PBSD runs.

    python scripts/sweep_default.py --envs pbsd/MathCalc-v0 --lrs 3e-4 1e-3 3e-3 --betas 0.1 --seeds 0
    python scripts/sweep_default.py --envs pbsd/ToolCall-v0 pbsd/MathCalc-v0 --seeds 0 1 2   # noise

Every run is the main job's run (the embedded model, the `train` defaults) with the grid's values
put in, capped by ``--max-wall-s`` of training. Results are saved per run as they finish
(``<runs-dir>/<env>__lr<lr>__b<beta>__s<seed>.json``, see :mod:`pbsd_agents.grid`) so the sweep
resumes where it stopped, and a table of held-out greedy success before -> after is printed at the
end (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(run: dict) -> dict:
    from pbsd_agents.grid import train

    summary, wall_s = train(run["config"])
    return {"env": run["config"]["env"], "lr": run["config"]["lr"], "beta": run["beta"], "seed": run["config"]["seed"],
            "before": summary["eval_before"]["success"], "after": summary["eval_after"]["success"],
            "steps": summary["eval_after"]["step"], "wall_s": round(wall_s, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"])
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="learning rates (default: the train default)")
    p.add_argument("--betas", type=float, nargs="+", default=None, help="PBSD beta values (default: the train default)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (0: the train default)")
    p.add_argument("--max-wall-s", type=float, default=0, help="training wall-clock cap per run (0: the train default)")
    p.add_argument("--algo-arg", action="append", default=[], metavar="K=V", help="extra PBSD option for every run (repeatable)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "sweep")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each on one torch thread (in a process of its own when more than 1)")
    args = p.parse_args(argv)

    from pbsd_agents.algorithms.pbsd import PBSDConfig
    from pbsd_agents.cli.common import parse_kv
    from pbsd_agents.grid import run_grid
    from pbsd_agents.trainer import TrainConfig

    try:
        extra = parse_kv(args.algo_arg, "--algo-arg")
    except ValueError as exc:
        p.error(str(exc))
    tag = "".join(f"__{k}{v}" for k, v in sorted(extra.items()))
    base = dataclasses.asdict(TrainConfig())
    lrs = args.lrs or [base["lr"]]
    betas = args.betas or [base["algo_args"].get("beta", PBSDConfig().beta)]
    runs = {}
    for env, lr, beta, seed in itertools.product(args.envs, lrs, betas, args.seeds):
        name = f"{env.split('/')[-1]}__lr{lr:g}__b{beta:g}{tag}__s{seed}"
        runs[name] = {"beta": beta, "config": {
            **base, "env": env, "lr": lr, "algo_args": {**base["algo_args"], **extra, "beta": beta}, "seed": seed,
            "out": str(args.runs_dir / name), "max_wall_s": args.max_wall_s or base["max_wall_s"],
            "progress": False, "save_every": 0, "keep_last": 1, **({"steps": args.steps} if args.steps else {})}}

    def describe(name: str, r: dict) -> str:
        return f"{r['env']} lr={r['lr']:g} beta={r['beta']:g} seed={r['seed']}: {r['before']:.3f} -> {r['after']:.3f} ({r['wall_s']:.0f} s)"

    done, failed = run_grid(runs, run_one, args.runs_dir, jobs=args.jobs, describe=describe)
    results = list(done.values())
    print("\n| env | lr | beta | seeds | before | after | gain | wall s |\n|---|---|---|---|---|---|---|---|")
    for env, lr, beta in itertools.product(args.envs, lrs, betas):
        rs = [r for r in results if (r["env"], r["lr"], r["beta"]) == (env, lr, beta)]
        if not rs:  # every seed failed
            continue
        gains = [r["after"] - r["before"] for r in rs]
        sd = f" ± {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
        print(f"| {env} | {lr:g} | {beta:g} | {len(rs)} | {statistics.mean(r['before'] for r in rs):.3f} | "
              f"{statistics.mean(r['after'] for r in rs):.3f} | {statistics.mean(gains):+.3f}{sd} | "
              f"{statistics.mean(r['wall_s'] for r in rs):.0f} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
