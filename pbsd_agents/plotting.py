"""Learning curves of run folders (``curves.png``; also ``pbsd-agents plot RUN [RUN ...]``).

One run or several overlaid (a method comparison: one colour per run). Every axis is labelled, the
legends sit below their panels rather than over the data, and the success panel is scaled to the
data (a gain from 0.000 to 0.109 is visible) with each run's starting greedy success dashed and the
95 % interval of greedy success shaded when the eval rows carry one (``success_ci``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .runlog import read_jsonl

__all__ = ["draw_curves", "plot_run", "plot_runs", "run_label"]

X_LABEL = "sampled trajectories"
# Success panel: (eval key, its interval key, legend text, line style).
SUCCESS = [("success", "success_ci", "greedy", "-"), ("success_t1", "success_t1_ci", "T=1", "--"),
           ("pass_at_k", "pass_at_k_ci", "pass@k", ":")]
# Training panels: (title, y-axis label, metric keys from metrics.jsonl). Keys no run logs are skipped.
TRAIN_PANELS = [
    ("loss", "loss", ["loss"]),
    ("reward of samples", "mean reward", ["student_reward", "teacher_reward"]),
    ("PBSD: h(y) = log πθ − log πT", "h(y) (nats, summed over actions)", ["h_pos", "h_neg", "margin"]),
    ("log πθ of y+ / y−", "log-probability (nats)", ["logp_pos", "logp_neg"]),
]
STYLES = ["-", "--", ":", "-."]


def run_label(run_dir: str | Path) -> str:
    """A run's name in legends: its folder name, with its algorithm when the name does not say it."""
    run_dir = Path(run_dir)
    algo = None
    if (run_dir / "config.yaml").exists():
        try:
            algo = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("algo")
        except yaml.YAMLError:
            algo = None
    name = run_dir.resolve().name
    return f"{name} ({algo})" if algo and algo not in name else name


def _read(run_dir: Path) -> tuple[list[dict], list[dict]]:
    if not (run_dir / "metrics.jsonl").exists() and not (run_dir / "eval.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no metrics.jsonl or eval.jsonl)")
    return read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "eval.jsonl")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def draw_curves(run_dirs, labels: list[str] | None = None):
    """The figure of one or several runs (returned open; :func:`plot_runs` saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not run_dirs:
        raise ValueError("no run folder to plot")
    logs = [_read(r) for r in run_dirs]
    labels = list(labels) if labels else [run_label(r) for r in run_dirs]
    if len(set(labels)) < len(labels):  # two runs/x/run folders: their parents tell them apart
        labels = [f"{r.resolve().parent.name}/{label}" for r, label in zip(run_dirs, labels)]
    many = len(run_dirs) > 1
    colors = [f"C{i % 10}" for i in range(len(run_dirs))]
    panels = [(t, y, [k for k in keys if any(_number(m.get(k)) for ms, _ in logs for m in ms)])
              for t, y, keys in TRAIN_PANELS]
    panels = [p for p in panels if p[2]]
    n = 1 + len(panels)
    # the extra height below the panels holds their legends
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 4.6 if many else 4.0), squeeze=False)
    axes = axes[0]

    ax, seen = axes[0], []
    for (_, evals), label, color in zip(logs, labels, colors):
        for key, ci_key, name, style in SUCCESS:
            rows = [e for e in evals if _number(e.get(key)) and _number(e.get("trajectories"))]
            if not rows:
                continue
            xs, ys = [e["trajectories"] for e in rows], [e[key] for e in rows]
            ax.plot(xs, ys, style, marker="o", markersize=3, color=color if many else None,
                    label=f"{label}: {name}" if many else name)
            seen += ys
            band = [(e["trajectories"], *e[ci_key]) for e in rows if isinstance(e.get(ci_key), (list, tuple))
                    and len(e[ci_key]) == 2]
            if key == "success" and band:  # one band per run keeps the panel readable
                bx, lo, hi = zip(*band)
                ax.fill_between(bx, lo, hi, alpha=0.15, color=ax.lines[-1].get_color(), linewidth=0,
                                label=f"{label}: greedy 95% interval" if many else "greedy 95% interval")
                seen += list(lo) + list(hi)
        start = next((e["success"] for e in evals if _number(e.get("success"))), None)
        if start is not None:
            ax.axhline(start, linestyle=(0, (4, 3)), linewidth=1, color=color if many else "0.4",
                       label=f"{label}: start {start:.3f}" if many else f"start {start:.3f}")
            seen.append(start)
    ax.set_title("held-out success")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel("success rate")
    if seen:
        lo, hi = min(seen), max(seen)
        pad = max(0.02, 0.1 * (hi - lo))
        ax.set_ylim(max(-0.01, lo - pad), min(1.01, hi + pad))
    _legend(ax)

    for ax, (title, ylabel, keys) in zip(axes[1:], panels):
        for (metrics, _), label, color in zip(logs, labels, colors):
            for key, style in zip(keys, STYLES):
                pts = [(m["trajectories"], m[key]) for m in metrics if _number(m.get(key)) and _number(m.get("trajectories"))]
                if pts:
                    ax.plot(*zip(*pts), style if many else "-", linewidth=1, color=color if many else None,
                            label=f"{label}: {key}" if many else key)
        ax.set_title(title)
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(ylabel)
        _legend(ax)
    fig.suptitle(" vs ".join(labels) if many else labels[0], fontsize=9)
    fig.tight_layout()
    return fig


def plot_runs(run_dirs, out: str | Path, labels: list[str] | None = None) -> Path:
    """Draw one or several runs overlaid into the PNG ``out``; returns its path."""
    import matplotlib.pyplot as plt

    fig = draw_curves(run_dirs, labels)
    out = Path(out)
    fig.savefig(out, dpi=90, bbox_inches="tight")  # "tight" keeps the legends below the panels in the picture
    plt.close(fig)
    return out


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw a run's held-out success and training metrics against sampled trajectories (default
    ``RUN/curves.png``); returns the PNG path."""
    return plot_runs([run_dir], out or Path(run_dir) / "curves.png")


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # a panel whose metric was never a number (e.g. every step skipped)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
