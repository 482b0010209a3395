"""PBSD against OPSD, GRPO and SFT baselines at an equal budget of sampled trajectories.

    python scripts/compare_methods.py --quick                  # a few minutes: one env, one seed, tiny budget
    python scripts/compare_methods.py                          # the full study (resumes where it stopped)
    python scripts/compare_methods.py --jobs 16                # the same, 16 runs at a time (1 thread each)

From the same initial model (default: the embedded one), every method trains on each environment
with each seed until it has sampled ``--budget`` trajectories (teacher samples count) or hit the
per-run wall-clock cap, evaluating held-out greedy success along the way. Each run's result is saved
as it finishes (``<runs-dir>/results/<env>__<method>__s<seed>.json``, see :mod:`pbsd_agents.grid`),
so an interrupted study resumes where it stopped. Then ``docs/RESULTS.md`` is written: per
environment, mean ± std of final and peak success, final/peak (stability), sampled tokens to reach
a success level (token efficiency), wall time, and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (algo, algo_args, trajectories sampled per task and step). PBSD+ = greedy teacher decodes
# for y+, verifier pairs, NLL 0.5 on y+. The sample count lets every method evaluate at the same budgets.
METHODS = {
    "PBSD": ("pbsd", {}, 2),
    "PBSD+": ("pbsd", {"teacher_temperature": 0.0, "pair_filter": "verifier", "nll_coef": 0.5}, 2),
    "OPSD": ("opsd", {"teacher": "frozen"}, 1),
    "GRPO": ("grpo", {"group_size": 4}, 4),
    "RFT": ("sft", {"only_successful": True, "teacher_temperature": 1.0}, 1),
    "SeqKD": ("sft", {"only_successful": False, "teacher_temperature": 0.0}, 1),
}
KEEP = "<!-- everything below this line is kept when compare_methods.py rewrites the tables -->"
ENVS = ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0")


def run_name(env: str, method: str, seed: int) -> str:
    """A run's folder under --runs-dir, and its result file's stem under results/."""
    return f"{env.split('/')[-1]}__{method.replace('+', 'plus')}__s{seed}"


def run_one(run: dict) -> dict:
    """One run of the grid: train, then its evaluation curve (with sampled tokens) from the run folder."""
    from transformers.utils import logging

    from pbsd_agents.grid import train
    from pbsd_agents.runlog import read_jsonl

    logging.disable_progress_bar()
    _, wall_s = train(run["config"])
    out = Path(run["config"]["out"])
    metrics, evals = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "eval.jsonl")
    tokens_at = {0: 0, **{m["step"]: m["tokens"] for m in metrics}}
    curve = [{"step": e["step"], "trajectories": e["trajectories"], "tokens": tokens_at.get(e["step"], 0),
              "success": e["success"], "success_t1": e.get("success_t1")} for e in evals]
    return {"env": run["config"]["env"], "method": run["method"], "seed": run["config"]["seed"], "curve": curve,
            "wall_s": round(wall_s, 1), "steps": metrics[-1]["step"] if metrics else 0,
            "skipped": metrics[-1].get("skipped_total", 0) if metrics else 0}


def grid(args) -> dict[str, dict]:
    """``run_name -> {"method", "config"}`` for every (env, method, seed) asked for."""
    runs = {}
    for env, method, seed in itertools.product(args.envs, args.methods, args.seeds):
        algo, algo_args, per_task = METHODS[method]
        name = run_name(env, method, seed)
        runs[name] = {"method": method, "config": dict(
            algo=algo, algo_args=algo_args, env=env, model=args.model, max_trajectories=args.budget, steps=10**9,
            tasks_per_step=args.tasks_per_step, lr=args.lr, pass_k=1, save_every=0, keep_last=1, seed=seed,
            eval_every=max(1, round(args.eval_every / (per_task * args.tasks_per_step))),  # in steps
            eval_tasks=args.eval_tasks, out=str(args.runs_dir / name), max_wall_s=args.max_wall_s,
            max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, progress=False, device=args.device)}
    return runs


def summarise(results: list[dict], out_md: Path, fig_dir: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# PBSD vs baselines on the procedural environments", "",
             f"Written by `scripts/compare_methods.py`. This document's numbers come from: `{command}`.",
             "Raw results (every evaluation of every run): `compare_results.json` beside this file. "
             "Full study: `python scripts/compare_methods.py` (6 methods × 3 envs × 3 seeds; resumes where it stopped; `--jobs N` runs N at a time).", "",
             "Greedy held-out success of the student view. *final*: at the end of the budget; *peak*: best evaluation; "
             "*final/peak*: stability; *tokens to L*: sampled tokens (teacher samples included) until greedy success first "
             "reached L = initial success + 0.05, median over seeds that reached it (n/a: none did); *trajectories*: the fewest "
             "sampled by any seed (below the budget only where the wall-clock cap stopped a run); mean ± std over seeds.", ""]
    envs = sorted({r["env"] for r in results}, key=lambda e: ENVS.index(e) if e in ENVS else 99)
    for env in envs:
        rows = [r for r in results if r["env"] == env]
        start = statistics.mean(r["curve"][0]["success"] for r in rows)
        level = start + 0.05
        lines += [f"## {env}", "", f"Initial greedy success {start:.3f}; level L = {level:.3f}.", "",
                  "| method | seeds | final | peak | final/peak | tokens to L | trajectories | wall s |", "|---|---|---|---|---|---|---|---|"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for method in METHODS:
            mr = [r for r in rows if r["method"] == method]
            if not mr:
                continue
            finals = [r["curve"][-1]["success"] for r in mr]
            peaks = [max(c["success"] for c in r["curve"]) for r in mr]
            ratio = [f / p for f, p in zip(finals, peaks) if p > 0]
            reach = [next((c["tokens"] for c in r["curve"] if c["success"] >= level), None) for r in mr]
            reach = [x for x in reach if x is not None]
            lines.append(
                f"| {method} | {len(mr)} | {_ms(finals)} | {_ms(peaks)} | {_ms(ratio) if ratio else 'n/a'} | "
                f"{int(statistics.median(reach)) if reach else 'n/a'} ({len(reach)}/{len(mr)}) | "
                f"{min(r['curve'][-1]['trajectories'] for r in mr)} | {statistics.mean(r['wall_s'] for r in mr):.0f} |"
            )
            xs = [c["trajectories"] for c in mr[0]["curve"]]
            n = min(len(r["curve"]) for r in mr)
            ys = [statistics.mean(r["curve"][i]["success"] for r in mr) for i in range(n)]
            ax.plot(xs[:n], ys, marker="o", markersize=3, label=method)
        ax.set_xlabel("sampled trajectories")
        ax.set_ylabel("held-out greedy success")
        ax.set_title(env)
        ax.legend(fontsize=7)
        fig.tight_layout()
        png = fig_dir / f"compare_{env.split('/')[-1]}.png"
        fig.savefig(png, dpi=90)
        plt.close(fig)
        lines += ["", f"![{env}]({png.relative_to(out_md.parent) if png.is_relative_to(out_md.parent) else png})", ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    old = out_md.read_text() if out_md.exists() else ""
    kept = old[old.index(KEEP):] if KEEP in old else KEEP + "\n"  # hand-written analysis, the investigation
    out_md.write_text("\n".join(lines) + "\n" + kept)


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one env, one seed, a tiny budget: a few minutes")
    p.add_argument("--model", default="default", help="initial model for every run")
    p.add_argument("--envs", nargs="+", default=list(ENVS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=512, help="sampled trajectories per run (teacher samples count)")
    p.add_argument("--max-wall-s", type=float, default=900,
                   help="wall-clock cap of one run's training, evaluations included (a safety net: the budget should bind)")
    p.add_argument("--tasks-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--eval-every", type=int, default=128, help="sampled trajectories between evaluations")
    p.add_argument("--eval-tasks", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "compare")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "RESULTS.md")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process on one thread")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.quick:
        args.envs, args.seeds, args.budget, args.eval_tasks = args.envs[:1], args.seeds[:1], 32, 8
        args.eval_every, args.max_wall_s, args.tasks_per_step = 16, 60, 4
    from pbsd_agents.grid import run_grid

    def describe(name: str, r: dict) -> str:
        return f"{r['env']} {r['method']} seed {r['seed']}: final greedy success {r['curve'][-1]['success']:.3f} ({r['wall_s']:.0f} s)"

    done, failed = run_grid(grid(args), run_one, args.runs_dir / "results", jobs=args.jobs, describe=describe)
    results = [done[name] for name in sorted(done, key=lambda name: f"{name}.json")]  # the result files' order
    command = "python scripts/compare_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summarise(results, args.out, args.out.parent, command.strip())
    (args.out.parent / "compare_results.json").write_text(json.dumps(results, indent=1))  # raw, beside the document
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
