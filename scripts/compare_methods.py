"""PBSD and its push-down variants against OPSD, GRPO and SFT baselines at an equal budget of sampled trajectories.

    python scripts/compare_methods.py --quick                  # a few minutes: one env, one seed, tiny budget
    python scripts/compare_methods.py --tune --jobs 16         # 1. pick lr (and β) per method on validation tasks
    python scripts/compare_methods.py --jobs 16                # 2. the study with the picked settings (resumes)

From the same initial model (default: the embedded one), every method trains on each environment
with each seed until it has sampled ``--budget`` trajectories (teacher samples count) or hit the
per-run wall-clock cap, evaluating held-out greedy success on ``--eval-tasks`` test tasks (all 200 of
a procedural env by default) along the way. Each run's result is saved as it finishes
(``<runs-dir>/results/<env>__<method>__lr<lr>[__b<β>]__s<seed>.json``, see :mod:`pbsd_agents.grid`),
so an interrupted study resumes where it stopped. Then ``docs/RESULTS.md`` is written: per
environment, final greedy success with a 95% interval (bootstrap over test tasks and seeds), its
paired difference against the best baseline (same tasks, same seeds), peak, final/peak (stability),
sampled tokens to reach a success level (token efficiency), wall time, the hyper-parameters used (and
the validation score of every setting tuned in ``<runs-dir>/tune``), and a PNG of the curves.

Tuning (``--tune``): each method trains at every setting of a small grid (``--tune-lrs``, and
``--tune-pbsd-betas`` / ``--tune-opsd-betas`` for the methods that have a β) for ``--tune-budget``
trajectories on ``--tune-seeds``, and is scored on ``--val-tasks`` *train-split* tasks (indices
0..N−1; the trainer draws its tasks uniformly from 2^31 train indices, so these are effectively never
trained on; the test split is never used). One rule for every method: the highest mean final
validation greedy success over the tuning seeds, ties broken by the mean validation success at
temperature 1, then by the lower learning rate, then the lower β. The picks go to
``<runs-dir>/tuned.json``, which the study then reads (without it, every method runs at ``--lr`` and
its default β). ``--model`` sets the start: one model for every env, or ``ENV=PATH`` per env (e.g. each
env's own warm-started checkpoint folder); give each set of starts its own ``--runs-dir``.

The document can be written again from the files beside it, without ``runs/``: ``--rewrite --out
docs/RESULTS.md`` reads ``compare_results.json`` (every evaluation of every run) and ``compare_meta.json``
(the command that produced them, the tuned picks). A warmer start of the embedded model, from
student-view oracle demonstrations:

    pbsd-agents train --algo sft --algo-arg source=oracle --algo-arg teacher_view_fraction=0 \
        --algo-arg envs=pbsd/MathCalc-v0,pbsd/ToolCall-v0 --lr 1e-3 --tasks-per-step 16 --steps 100 --out runs/warm

took MathCalc's greedy student success (200 test tasks) from 0.00 to 0.50 but ToolCall's only from 0.095 to
0.105 (0.15 after 300 steps, where MathCalc is at 0.87). ToolCall's own start: those 300 steps, then 150
ToolCall-only steps (``--model <step 300> --algo-arg envs=pbsd/ToolCall-v0 --steps 150``, same flags),
which took ToolCall to 0.40.
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
    # The push-down variants (pbsd_agents/algorithms/pbsd.py): y- pushed down by 1 − its reward; and three
    # y- per y+ with the score-function term centred on the group (as many samples per task as GRPO).
    "PBSD-failed": ("pbsd", {"push_down": "failed"}, 2),
    "PBSD-group": ("pbsd", {"push_down": "group_baseline", "group_size": 3}, 4),
}
VARIANTS = ("PBSD-failed", "PBSD-group")
BASELINES = ("OPSD", "GRPO", "RFT", "SeqKD")  # "best baseline": the one of these with the highest mean final success
KEEP = "<!-- everything below this line is kept when compare_methods.py rewrites the tables -->"
ENVS = ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0")


def run_name(env: str, method: str, seed: int, lr: float | None = None, beta: float | None = None) -> str:
    """A run's folder under --runs-dir, and its result file's stem under results/ (the settings in it, so a
    result is reused only for the same learning rate and β)."""
    name = f"{env.split('/')[-1]}__{method.replace('+', 'plus')}"
    name += f"__lr{lr:g}" if lr is not None else ""
    name += f"__b{beta:g}" if beta is not None else ""
    return f"{name}__s{seed}"


def run_one(run: dict) -> dict:
    """One run of the grid: train, then its evaluation curve (with sampled tokens and per-task outcomes)."""
    from transformers.utils import logging

    from pbsd_agents.grid import train
    from pbsd_agents.runlog import read_jsonl

    logging.disable_progress_bar()
    _, wall_s = train(run["config"])
    out = Path(run["config"]["out"])
    metrics, evals = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "eval.jsonl")
    tokens_at = {0: 0, **{m["step"]: m["tokens"] for m in metrics}}
    curve = [{"step": e["step"], "trajectories": e["trajectories"], "tokens": tokens_at.get(e["step"], 0),
              "success": e["success"], "success_t1": e.get("success_t1"), "outcomes": e.get("greedy_outcomes")}
             for e in evals]
    return {"env": run["config"]["env"], "method": run["method"], "seed": run["config"]["seed"], "curve": curve,
            "lr": run["config"]["lr"], "beta": run["config"]["algo_args"].get("beta"),
            "wall_s": round(wall_s, 1), "steps": metrics[-1]["step"] if metrics else 0,
            "skipped": metrics[-1].get("skipped_total", 0) if metrics else 0}


def starts(models: list[str], envs: list[str]) -> dict[str, str]:
    """``env -> initial model`` from ``--model``: one model for every env, or ``ENV=PATH`` for each env.

    Example:
        >>> starts(["default"], ["a", "b"])
        {'a': 'default', 'b': 'default'}
        >>> starts(["a=runs/wa", "b=runs/wb"], ["a", "b"])
        {'a': 'runs/wa', 'b': 'runs/wb'}
    """
    if len(models) == 1 and "=" not in models[0]:
        return dict.fromkeys(envs, models[0])
    pairs = dict(m.partition("=")[::2] for m in models)
    bad = [m for m in models if "=" not in m or not m.partition("=")[2]]
    if bad or set(pairs) != set(envs):
        raise ValueError(f"--model: give one model, or ENV=PATH for each of {', '.join(envs)}; got {' '.join(models)}")
    return pairs


def run_config(args, env: str, method: str, seed: int, lr: float, beta: float | None, budget: int, out: Path,
               **extra) -> dict:
    algo, algo_args, per_task = METHODS[method]
    return dict(
        algo=algo, algo_args={**algo_args, **({"beta": beta} if beta is not None else {})}, env=env,
        model=args.starts[env],
        max_trajectories=budget, steps=10**9, tasks_per_step=args.tasks_per_step, lr=lr, pass_k=1, save_every=0,
        keep_last=1, seed=seed, eval_tasks=args.eval_tasks, out=str(out), max_wall_s=args.max_wall_s,
        max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, progress=False, device=args.device,
        eval_every=max(1, round(args.eval_every / (per_task * args.tasks_per_step))), **extra)  # eval_every in steps


def grid(args, tuned: dict | None = None) -> dict[str, dict]:
    """``run_name -> {"method", "config"}`` for every (env, method, seed) asked for, at the tuned settings if any."""
    runs = {}
    for env, seed, method in itertools.product(args.envs, args.seeds, args.methods):  # a stopped study has whole seeds
        pick = (tuned or {}).get(env, {}).get(method, {})
        lr, beta = pick.get("lr", args.lr), pick.get("beta")
        name = run_name(env, method, seed, lr, beta)
        runs[name] = {"method": method,
                      "config": run_config(args, env, method, seed, lr, beta, args.budget, args.runs_dir / name)}
    return runs


def betas_of(args, method: str) -> list[float | None]:
    """The β grid of a method: PBSD's preference temperature, OPSD's divergence mixture; None where there is no β."""
    algo = METHODS[method][0]
    return list(args.tune_pbsd_betas) if algo == "pbsd" else list(args.tune_opsd_betas) if algo == "opsd" else [None]


def tune_grid(args) -> dict[str, dict]:
    """Every (env, method, lr, β, seed) of the tuning grid: a smaller budget, evaluated once at the end on
    ``--val-tasks`` train-split tasks (``split=train`` for evaluation; never the test split)."""
    runs = {}
    for env, method, seed in itertools.product(args.envs, args.methods, args.tune_seeds):
        for lr, beta in itertools.product(args.tune_lrs, betas_of(args, method)):
            name = run_name(env, method, seed, lr, beta)
            config = run_config(args, env, method, seed, lr, beta, args.tune_budget, args.runs_dir / "tune" / name,
                                eval_env_kwargs={"split": "train"})
            config.update(eval_tasks=args.val_tasks, eval_every=0)  # before and after only
            runs[name] = {"method": method, "config": config}
    return runs


def tuning_scores(results: list[dict]) -> list[dict]:
    """One row per tuned setting ``{env, method, lr, beta, val_success, val_success_t1, seeds}``: the final
    validation greedy and T=1 success of its tuning runs, mean over seeds."""
    runs: dict = {}
    for r in results:
        runs.setdefault((r["env"], r["method"], r["lr"], r["beta"]), []).append(r["curve"][-1])
    return [{"env": env, "method": method, "lr": lr, "beta": beta,
             "val_success": round(statistics.mean(c["success"] for c in ends), 4),
             "val_success_t1": round(statistics.mean(c.get("success_t1") or 0.0 for c in ends), 4), "seeds": len(ends)}
            for (env, method, lr, beta), ends in runs.items()]


def select(results: list[dict]) -> dict[str, dict[str, dict]]:
    """``{env: {method: pick}}``: the same rule for every method (see the module docstring).

    Example:
        >>> r = lambda lr, s, t1: {"env": "e", "method": "m", "lr": lr, "beta": None, "seed": 0,
        ...                        "curve": [{"success": 0.0, "success_t1": 0.0}, {"success": s, "success_t1": t1}]}
        >>> select([r(1e-3, 0.2, 0.1), r(1e-4, 0.2, 0.1), r(3e-4, 0.1, 0.3)])["e"]["m"]["lr"]
        0.0001
    """
    def rank(row: dict) -> tuple:
        return row["val_success"], row["val_success_t1"], -row["lr"], -(row["beta"] if row["beta"] is not None else 0.0)

    picks: dict = {}
    for row in sorted(tuning_scores(results), key=rank, reverse=True):  # the best row of each method comes first
        pick = {k: v for k, v in row.items() if k not in ("env", "method")}
        picks.setdefault(row["env"], {}).setdefault(row["method"], pick)
    return picks


def outcome_matrix(rows: list[dict], at: int = -1) -> "np.ndarray | None":
    """seeds × tasks of greedy outcomes (0/1) at evaluation ``at`` (default: the final one), seeds in order; None
    when a run lacks them (older results)."""
    import numpy as np

    outs = [r["curve"][at].get("outcomes") for r in sorted(rows, key=lambda r: r["seed"])]
    if not outs or any(not o for o in outs) or len({len(o) for o in outs}) != 1:
        return None
    return np.array([[c == "1" for c in o] for o in outs], dtype=float)


def bootstrap_interval(x, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a seeds × tasks matrix and its percentile interval, resampling tasks and seeds (both with replacement).

    Each resample draws tasks and seeds independently and averages the chosen cells, so both sources of
    variation (which test tasks, which training seeds) widen the interval. For a paired difference, pass
    the difference of two methods' matrices on the same tasks and seeds: each resample then keeps the pairs.

    Example:
        >>> bootstrap_interval([[1, 1, 1, 1], [1, 1, 1, 1]])
        (1.0, 1.0, 1.0)
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    s = rng.integers(x.shape[0], size=(n_boot, x.shape[0]))
    t = rng.integers(x.shape[1], size=(n_boot, x.shape[1]))
    means = x[s[:, :, None], t[:, None, :]].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def paired_difference(a, b, **kw) -> tuple[float, float, float]:
    """``a − b`` (seeds × tasks, the same tasks and seeds in the same order): mean and bootstrap interval."""
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same seeds and tasks, got {a.shape} and {b.shape}")
    return bootstrap_interval(a - b, **kw)


def _ci(m: tuple[float, float, float], signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(m[0])} [{f.format(m[1])}, {f.format(m[2])}]"


def _same_seeds(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    seeds = {r["seed"] for r in a} & {r["seed"] for r in b}
    return [r for r in a if r["seed"] in seeds], [r for r in b if r["seed"] in seeds]


def summarise(results: list[dict], out_md: Path, fig_dir: Path, command: str, tuned: dict | None = None,
              tuning: list[dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# PBSD vs baselines on the procedural environments", "",
             f"Written by `scripts/compare_methods.py`. This document's numbers come from: `{command}`.",
             "Raw results (every evaluation of every run): `compare_results.json` beside this file. "
             "Full study: `python scripts/compare_methods.py --tune`, then `python scripts/compare_methods.py` "
             "(resumes where it stopped; `--jobs N` runs N at a time).", "",
             "Greedy held-out success of the student view. *final*: at the end of the budget, mean over seeds and test "
             "tasks with a 95% bootstrap interval (tasks and seeds resampled); *Δ start*: the paired difference against "
             "the initial model on the same tasks; *Δ best baseline*: the paired difference "
             "against the baseline (OPSD, GRPO, RFT, SeqKD) with the highest final mean, on the same tasks and seeds; "
             "*peak*: best evaluation; *final/peak*: stability; *tokens to L*: sampled tokens (teacher samples included) "
             "until greedy success first reached L = initial success + 0.05, median over seeds that reached it (n/a: none "
             "did); *trajectories*: the fewest sampled by any seed (below the budget only where the wall-clock cap stopped "
             "a run); *wall s*: a run's wall time, evaluations included, median over seeds (one slow run does not move it); "
             "peak and final/peak mean ± std over seeds.", ""]
    envs = sorted({r["env"] for r in results}, key=_env_order)
    for env in envs:
        rows = [r for r in results if r["env"] == env]
        start = statistics.mean(r["curve"][0]["success"] for r in rows)
        level = start + 0.05
        by_method = {m: [r for r in rows if r["method"] == m] for m in METHODS if any(r["method"] == m for r in rows)}
        finals = {m: statistics.mean(r["curve"][-1]["success"] for r in mr) for m, mr in by_method.items()}
        best = max((m for m in BASELINES if m in by_method), key=lambda m: finals[m], default=None)
        lines += [f"## {env}", "", f"Initial greedy success {start:.3f}; level L = {level:.3f}; "
                  f"best baseline {best or 'n/a'}.", "",
                  "| method | seeds | final [95% CI] | Δ start [95% CI] | Δ best baseline [95% CI] | peak | final/peak | "
                  "tokens to L | trajectories | wall s | lr | β |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for method, mr in by_method.items():
            x = outcome_matrix(mr)
            final = _ci(bootstrap_interval(x)) if x is not None else _ms([r["curve"][-1]["success"] for r in mr])
            x0 = outcome_matrix(mr, at=0)
            gain = _ci(paired_difference(x, x0), signed=True) if x is not None and x0 is not None else "n/a"
            delta = "—" if method == best else "n/a"
            if best is not None and method != best:
                a, b = _same_seeds(mr, by_method[best])
                xa, xb = outcome_matrix(a), outcome_matrix(b)
                if xa is not None and xb is not None and xa.shape == xb.shape:
                    delta = _ci(paired_difference(xa, xb), signed=True)
            peaks = [max(c["success"] for c in r["curve"]) for r in mr]
            ratio = [r["curve"][-1]["success"] / p for r, p in zip(mr, peaks) if p > 0]
            reach = [next((c["tokens"] for c in r["curve"] if c["success"] >= level), None) for r in mr]
            reach = [x for x in reach if x is not None]
            lr = sorted({r.get("lr") for r in mr if r.get("lr") is not None})
            beta = sorted({r.get("beta") for r in mr if r.get("beta") is not None})
            lines.append(
                f"| {method} | {len(mr)} | {final} | {gain} | {delta} | {_ms(peaks)} | {_ms(ratio) if ratio else 'n/a'} | "
                f"{int(statistics.median(reach)) if reach else 'n/a'} ({len(reach)}/{len(mr)}) | "
                f"{min(r['curve'][-1]['trajectories'] for r in mr)} | {statistics.median(r['wall_s'] for r in mr):.0f} | "
                f"{', '.join(f'{v:g}' for v in lr) or 'n/a'} | {', '.join(f'{v:g}' for v in beta) or '—'} |"
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
    if tuned:
        lines += ["## Tuned hyper-parameters", "",
                  "Picked on train-split validation tasks by `--tune` (see the script's docstring for the rule).", "",
                  "| env | method | lr | β | validation greedy | validation T=1 | tuning seeds |", "|---|---|---|---|---|---|---|"]
        for env in sorted(tuned, key=_env_order):
            for method, pick in sorted(tuned[env].items(), key=lambda kv: _method_order(kv[0])):
                lines.append(f"| {env} | {method} | {pick['lr']:g} | {_beta(pick)} | {pick['val_success']:.3f} | "
                             f"{pick['val_success_t1']:.3f} | {pick['seeds']} |")
        lines.append("")
    if tuning:  # every setting tried, so a reader sees how far apart the picks and the rest were
        lines += ["<details><summary>Every tuning setting: validation success at the end of its tuning runs "
                  "(✓: the setting the study ran)</summary>", "",
                  "| env | method | lr | β | validation greedy | validation T=1 | seeds | |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in sorted(tuning, key=lambda r: (_env_order(r["env"]), _method_order(r["method"]), r["lr"],
                                                 r["beta"] if r["beta"] is not None else 0.0)):
            pick = (tuned or {}).get(row["env"], {}).get(row["method"], {})
            ran = "✓" if (pick.get("lr"), pick.get("beta")) == (row["lr"], row["beta"]) else ""
            lines.append(f"| {row['env']} | {row['method']} | {row['lr']:g} | {_beta(row)} | {row['val_success']:.3f} | "
                         f"{row['val_success_t1']:.3f} | {row['seeds']} | {ran} |")
        lines += ["", "</details>", ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    old = out_md.read_text() if out_md.exists() else ""
    kept = old[old.index(KEEP):] if KEEP in old else KEEP + "\n"  # hand-written analysis, the investigation
    out_md.write_text("\n".join(lines) + "\n" + kept)


def _env_order(env: str) -> int:
    return ENVS.index(env) if env in ENVS else len(ENVS)


def _method_order(method: str) -> int:
    return list(METHODS).index(method) if method in METHODS else len(METHODS)


def _beta(setting: dict) -> str:
    return "—" if setting["beta"] is None else f"{setting['beta']:g}"


def _ms(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="one env, one seed, a tiny budget, the six main methods unless --methods is given: a few minutes")
    p.add_argument("--model", nargs="+", default=["default"],
                   help="initial model of every run (a checkpoint folder for a warm start), or ENV=PATH for each env")
    p.add_argument("--rewrite", action="store_true",
                   help="write --out again from compare_results.json and compare_meta.json beside it; run nothing")
    p.add_argument("--envs", nargs="+", default=list(ENVS))
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), help="default: all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=2048, help="sampled trajectories per run (teacher samples count)")
    p.add_argument("--max-wall-s", type=float, default=3600,
                   help="wall-clock cap of one run's training, evaluations included (a safety net: the budget should bind)")
    p.add_argument("--tasks-per-step", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate of a method that has no tuned one")
    p.add_argument("--eval-every", type=int, default=256, help="sampled trajectories between evaluations")
    p.add_argument("--eval-tasks", type=int, default=200, help="test tasks per evaluation (capped at the split: 200)")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--tune", action="store_true", help="run the tuning grid and write <runs-dir>/tuned.json, not the study")
    p.add_argument("--tune-lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4, 1e-3])
    p.add_argument("--tune-pbsd-betas", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    p.add_argument("--tune-opsd-betas", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                   help="OPSD's divergence: 0 forward KL, 0.5 JSD, 1 reverse KL")
    p.add_argument("--tune-budget", type=int, default=512, help="sampled trajectories per tuning run")
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--val-tasks", type=int, default=100, help="train-split validation tasks (indices 0..N-1)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "compare")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "RESULTS.md")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each on one torch thread (in a process of its own when more than 1)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.methods is None:
        args.methods = [m for m in METHODS if not (args.quick and m in VARIANTS)]
    if args.rewrite:
        raw, meta = args.out.parent / "compare_results.json", args.out.parent / "compare_meta.json"
        if not raw.exists():
            p.error(f"--rewrite needs {raw} (written beside the document by a study)")
        meta = json.loads(meta.read_text()) if meta.exists() else {}
        summarise(json.loads(raw.read_text()), args.out, args.out.parent, meta.get("command", "unknown"),
                  meta.get("tuned"), meta.get("tuning"))
        print(f"wrote {args.out}")
        return 0
    if args.quick:
        args.envs, args.seeds, args.budget, args.eval_tasks = args.envs[:1], args.seeds[:1], 32, 8
        args.eval_every, args.max_wall_s, args.tasks_per_step = 16, 60, 4
        args.tune_budget, args.val_tasks, args.tune_seeds = 16, 8, args.tune_seeds[:1]
    try:
        args.starts = starts(args.model, args.envs)  # env -> initial model, once
    except ValueError as exc:
        p.error(str(exc))
    from pbsd_agents.grid import run_grid

    def describe(name: str, r: dict) -> str:
        return f"{r['env']} {r['method']} seed {r['seed']}: final greedy success {r['curve'][-1]['success']:.3f} ({r['wall_s']:.0f} s)"

    tuned_path = args.runs_dir / "tuned.json"
    if args.tune:
        done, failed = run_grid(tune_grid(args), run_one, args.runs_dir / "tune" / "results", jobs=args.jobs,
                                describe=describe)
        picks = select(list(done.values()))
        old = json.loads(tuned_path.read_text()) if tuned_path.exists() else {}
        for env, methods in picks.items():  # a call on some envs or methods keeps the others' picks
            old.setdefault(env, {}).update(methods)
        tuned_path.write_text(json.dumps(old, indent=1))
        print(f"wrote {tuned_path}" + (f" ({len(failed)} tuning run(s) failed: run again to retry)" if failed else ""))
        return 1 if failed else 0
    tuned = json.loads(tuned_path.read_text()) if tuned_path.exists() else None
    if tuned is None:
        print(f"no {tuned_path}: every method runs at --lr {args.lr:g} and its default β (run --tune first to pick them)")
    done, failed = run_grid(grid(args, tuned), run_one, args.runs_dir / "results", jobs=args.jobs, describe=describe)
    results = [done[name] for name in sorted(done, key=lambda name: f"{name}.json")]  # the result files' order
    command = "python scripts/compare_methods.py " + " ".join(argv if argv is not None else sys.argv[1:])
    tune_runs = [json.loads(f.read_text()) for f in sorted((args.runs_dir / "tune" / "results").glob("*.json"))]
    tuning = tuning_scores([r for r in tune_runs if r["env"] in args.envs and r["method"] in args.methods]) or None
    summarise(results, args.out, args.out.parent, command.strip(), tuned, tuning)
    (args.out.parent / "compare_results.json").write_text(json.dumps(results, indent=1))  # raw, beside the document
    (args.out.parent / "compare_meta.json").write_text(
        json.dumps({"command": command.strip(), "tuned": tuned, "tuning": tuning}, indent=1))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
