"""curves.png is a picture people read: every axis labelled, legends outside the data, success scaled
to the data with the start dashed and its interval shaded; `pbsd-agents plot` overlays runs."""

import json

import matplotlib.pyplot as plt
import pytest

from pbsd_agents.cli import main as cli_main
from pbsd_agents.plotting import draw_curves, plot_run


def synthetic_run(folder, algo, gain, steps=6):
    """A run folder as the trainer writes it: config.yaml, metrics.jsonl and eval.jsonl with intervals."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"algo: {algo}\nenv: pbsd/MathCalc-v0\n")
    metrics = [{"step": s, "trajectories": 8 * s, "loss": 1.0 / s, "student_reward": 0.1 * s, "teacher_reward": 0.5,
                "h_pos": -s, "h_neg": -2 * s, "margin": s, "logp_pos": -3.0, "logp_neg": -4.0} for s in range(1, steps + 1)]
    evals = [{"step": s, "trajectories": 8 * s, "success": gain * s / steps, "success_ci": [0.0, gain * s / steps + 0.05],
              "success_t1": gain * s / steps / 2, "success_t1_ci": [0.0, 0.1], "pass_at_k": gain, "pass_at_k_ci": [0.0, 0.2],
              "k": 4} for s in (0, steps // 2, steps)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return folder


def check_readable(fig):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.has_data()]
    assert len(axes) == 5  # success, loss, rewards, h(y), log-probs
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
        legend = ax.get_legend()
        assert legend is not None, ax.get_title()
        box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.y1 <= frame.y0 or box.x0 >= frame.x1, f"the legend of {ax.get_title()!r} overlaps its data"
    return axes[0]


def test_one_run_has_labels_outside_legends_a_scaled_success_panel_a_start_line_and_a_band(tmp_path):
    run = synthetic_run(tmp_path / "pbsd-run", "pbsd", gain=0.109)
    fig = draw_curves([run])
    success = check_readable(fig)
    low, high = success.get_ylim()
    assert low < 0 + 1e-9 and 0.109 < high < 0.3  # scaled to the data, not fixed at 0-1
    start = [line for line in success.get_lines() if line.get_label().startswith("start")]
    assert len(start) == 1 and set(start[0].get_ydata()) == {0.0} and start[0].get_linestyle() != "-"
    assert len(success.collections) == 1  # the greedy 95 % interval band
    plt.close(fig)
    png = plot_run(run)
    assert png == run / "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_runs_overlaid_name_each_run(tmp_path, capsys):
    a = synthetic_run(tmp_path / "a", "pbsd", gain=0.3)
    b = synthetic_run(tmp_path / "b", "grpo", gain=0.1)
    fig = draw_curves([a, b])
    success = check_readable(fig)
    texts = [t.get_text() for t in success.get_legend().get_texts()]
    assert any(t.startswith("a (pbsd)") for t in texts) and any(t.startswith("b (grpo)") for t in texts)
    assert len(success.collections) == 2
    plt.close(fig)
    out = tmp_path / "compare.png"
    assert cli_main(["plot", str(a), str(b), "--out", str(out), "--label", "PBSD", "--label", "GRPO"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli_main(["plot", str(a), str(b)]) == 2
    assert "several runs need --out" in capsys.readouterr().err


def test_a_run_without_intervals_or_training_rows_still_draws(tmp_path):
    run = tmp_path / "evals-only"
    run.mkdir()
    (run / "eval.jsonl").write_text(json.dumps({"step": 0, "trajectories": 0, "success": 0.25}) + "\n")
    fig = draw_curves([run])
    [ax] = fig.axes
    assert ax.get_ylabel() == "success rate" and not ax.collections
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        draw_curves([tmp_path / "nothing"])
