"""Measure what `pbsd-agents train` should default to: a grid of (env, lr, beta, seed) PBSD runs.

    python scripts/sweep_default.py --envs pbsd/MathCalc-v0 --lrs 3e-4 1e-3 3e-3 --betas 0.1 --seeds 0
    python scripts/sweep_default.py --envs pbsd/ToolCall-v0 pbsd/MathCalc-v0 --seeds 0 1 2   # noise

Every run is the main job's run (the embedded model, the `train` defaults) with the grid's values
put in, capped by ``--max-wall-s`` of training. Results are saved per run as they finish
(``<runs-dir>/<env>__lr<lr>__b<beta>__s<seed>.json``) so the sweep resumes where it stopped, and a
table of held-out greedy success before -> after is printed at the end (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(env: str, lr: float, beta: float, seed: int, args, path: Path) -> dict:
    from pbsd_agents.trainer import TrainConfig, Trainer

    base = TrainConfig()
    cfg = dataclasses.replace(
        base, env=env, lr=lr, algo_args={**base.algo_args, **args.extra, "beta": beta}, seed=seed, out=str(path.with_suffix("")),
        max_wall_s=args.max_wall_s or base.max_wall_s, progress=False, save_every=0, keep_last=1,
        **({"steps": args.steps} if args.steps else {}),
    )
    t0 = time.time()
    summary = Trainer(cfg).train()
    return {"env": env, "lr": lr, "beta": beta, "seed": seed, "before": summary["eval_before"]["success"],
            "after": summary["eval_after"]["success"], "steps": summary["eval_after"]["step"], "wall_s": round(time.time() - t0, 1)}


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
    args = p.parse_args(argv)

    import yaml

    import pbsd_agents  # noqa: F401

    args.extra = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.algo_arg)}
    tag = "".join(f"__{k}{v}" for k, v in sorted(args.extra.items()))
    from pbsd_agents.algorithms.pbsd import PBSDConfig
    from pbsd_agents.trainer import TrainConfig

    lrs = args.lrs or [TrainConfig().lr]
    betas = args.betas or [TrainConfig().algo_args.get("beta", PBSDConfig().beta)]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    results = []
    grid = [(e, lr, b, s) for e in args.envs for lr in lrs for b in betas for s in args.seeds]
    for k, (env, lr, beta, seed) in enumerate(grid, 1):
        path = args.runs_dir / f"{env.split('/')[-1]}__lr{lr:g}__b{beta:g}{tag}__s{seed}.json"
        if not path.exists():
            print(f"[{k}/{len(grid)}] {env} lr={lr:g} beta={beta:g} seed={seed}", flush=True)
            path.write_text(json.dumps(run_one(env, lr, beta, seed, args, path), indent=1))
        results.append(json.loads(path.read_text()))
        r = results[-1]
        print(f"    {r['before']:.3f} -> {r['after']:.3f} ({r['wall_s']:.0f} s)", flush=True)

    print("\n| env | lr | beta | seeds | before | after | gain | wall s |\n|---|---|---|---|---|---|---|---|")
    for env in args.envs:
        for lr in lrs:
            for beta in betas:
                rs = [r for r in results if (r["env"], r["lr"], r["beta"]) == (env, lr, beta)]
                gains = [r["after"] - r["before"] for r in rs]
                sd = f" ± {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
                print(f"| {env} | {lr:g} | {beta:g} | {len(rs)} | {statistics.mean(r['before'] for r in rs):.3f} | "
                      f"{statistics.mean(r['after'] for r in rs):.3f} | {statistics.mean(gains):+.3f}{sd} | "
                      f"{statistics.mean(r['wall_s'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
