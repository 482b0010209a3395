"""Learning curves of a run folder (``curves.png``; also ``pbsd-agents plot RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path

from .runlog import read_jsonl

__all__ = ["plot_run"]

# Panels: (title, metric keys from metrics.jsonl). Keys a run does not log are skipped.
TRAIN_PANELS = [
    ("loss", ["loss"]),
    ("reward of samples", ["student_reward", "teacher_reward"]),
    ("PBSD: h(y) = log πθ − log πT", ["h_pos", "h_neg", "margin"]),
    ("log πθ of y+ / y−", ["logp_pos", "logp_neg"]),
]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw held-out success and the training metrics against sampled trajectories; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists() and not (run_dir / "eval.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no metrics.jsonl or eval.jsonl)")
    metrics, evals = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "eval.jsonl")
    panels = [(t, [k for k in keys if any(k in m for m in metrics)]) for t, keys in TRAIN_PANELS]
    panels = [(t, keys) for t, keys in panels if keys]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 3.4), squeeze=False)
    ax = axes[0][0]
    for key, label in (("success", "greedy"), ("success_t1", "T=1"), ("pass_at_k", "pass@k")):
        pts = [(e["trajectories"], e[key]) for e in evals if e.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_title("held-out success")
    ax.set_xlabel("sampled trajectories")
    ax.set_ylim(-0.02, 1.02)
    _legend(ax)
    for ax, (title, keys) in zip(axes[0][1:], panels):
        for key in keys:
            pts = [(m["trajectories"], m[key]) for m in metrics if isinstance(m.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=key, linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("sampled trajectories")
        _legend(ax)
    fig.suptitle(run_dir.name, fontsize=9)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # a panel whose metric was never a number (e.g. every step skipped)
        ax.legend(fontsize=8)
