r"""Why PBSD learns slower than SFT on teacher decodes: its gradient, split into its two halves.

    python scripts/investigate_pbsd.py                           # MathCalc and ToolCall, writes docs/
    python scripts/investigate_pbsd.py --runs-dir runs/compare   # also draws the study's PBSD run curves

PBSD's loss per pair is ``−log σ(β m)`` with ``m = h(y+) − h(y-)``. Its gradient is::

    ∇L = −w · β · ( ∇ log π_θ(y+ | x) − ∇ log π_θ(y- | x) ),   w = σ(−β m)

Only the student's log-probs carry gradient (the teacher is frozen), so the update is the sum of a
push-up on the teacher's sample, ``u+ = w β ∇ log π_θ(y+)``, and a push-down on the student's own
sample, ``u- = w β ∇ log π_θ(y-)``. While every pair sits deep in the linear regime (m ≪ 0, w ≈ 1) the
push-down is a score function of the student's own samples, whose expectation is exactly zero
(``E_{y~π_θ}[∇ log π_θ(y)] = 0``): it adds variance, not direction. With the trainer's global gradient
clip (1.0) that variance also shrinks the useful half of each step.

This script measures, at the initial weights and on fresh batches drawn as the trainer draws them:
``‖u+‖``, ``‖u-‖``, ``cos(u+, u-)``; how close PBSD's and SFT's (token-mean NLL of y+) update
directions are; how much of a clipped PBSD step lies along ``u+`` against a clipped SFT step; and
whether ``u-`` averages away over batches (norm of the mean ≈ mean norm / √B if it is zero-mean) while
``u+`` does not. It writes a markdown section between markers in ``docs/study-512/RESULTS.md`` (kept when
``compare_methods.py`` rewrites the tables) and a PNG of the study's PBSD margin and likelihood curves.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- investigate_pbsd.py: begin -->", "<!-- investigate_pbsd.py: end -->"


def flat_grad(value, params) -> "torch.Tensor":
    import torch

    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def measure(env: str, batches: int, seed: int, clip: float) -> dict:
    import torch
    import torch.nn.functional as F

    from pbsd_agents.trainer import TrainConfig, Trainer

    cfg = TrainConfig(algo="pbsd", env=env, seed=seed, device="cpu", progress=False,
                      out=tempfile.mkdtemp(prefix="investigate-"))
    tr = Trainer(cfg)
    tr.setup()
    beta = tr.algorithm.config.beta
    params = [p for p in tr.policy.model.parameters() if p.requires_grad]
    rows, sum_pos, sum_neg = [], None, None
    for b in range(1, batches + 1):
        batch = tr.collect_batch(b)  # the batch the trainer's step b would train on
        pairs = tr.algorithm.scored_pairs(batch)
        pos, neg = [p for p, _ in pairs], [n for _, n in pairs]
        sc = tr.algorithm.score(pairs, tr.policy)  # the loss's own h(y+), h(y-); student sums keep their graph
        margin = (sc.h_pos - sc.h_neg).detach()
        w = torch.sigmoid(-beta * margin)
        u_pos = flat_grad((w * beta * sc.logp_pos).mean(), params)
        u_neg = flat_grad((w * beta * sc.logp_neg).mean(), params)
        sft = flat_grad(torch.cat(sc.token_logp_pos).mean(), params)  # SeqKD's ascent direction on the same y+
        pbsd = u_pos - u_neg
        sum_pos = u_pos if sum_pos is None else sum_pos + u_pos
        sum_neg = u_neg if sum_neg is None else sum_neg + u_neg
        clipped = min(1.0, clip / pbsd.norm().item())
        sft_clipped = min(1.0, clip / sft.norm().item())
        unit = sft / sft.norm()
        rows.append({
            "pairs": len(pairs), "margin": margin.mean().item(), "weight": w.mean().item(),
            "len_pos": statistics.mean(t.num_action_tokens for t in pos),
            "len_neg": statistics.mean(t.num_action_tokens for t in neg),
            "norm_pos": u_pos.norm().item(), "norm_neg": u_neg.norm().item(),
            "cos_pos_neg": F.cosine_similarity(u_pos, u_neg, dim=0).item(),
            "cos_pbsd_sft": F.cosine_similarity(pbsd, sft, dim=0).item(),
            "cos_pos_sft": F.cosine_similarity(u_pos, sft, dim=0).item(),
            # length of the clipped step along SFT's direction: PBSD's against SFT's own
            "along_sft_pbsd": clipped * torch.dot(pbsd, unit).item(),
            "along_sft_sft": sft_clipped * sft.norm().item(),
            "norm_pbsd": pbsd.norm().item(), "norm_sft": sft.norm().item(),
        })
        print(f"{env} batch {b}: ‖u+‖ {rows[-1]['norm_pos']:.2f} ‖u-‖ {rows[-1]['norm_neg']:.2f} "
              f"cos(PBSD, SFT) {rows[-1]['cos_pbsd_sft']:.3f}", flush=True)
    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
    mean["avg_norm_pos"] = (sum_pos / batches).norm().item()
    mean["avg_norm_neg"] = (sum_neg / batches).norm().item()
    mean["batches"] = batches
    return mean


def run_curves(runs_dir: Path, envs: list[str], png: Path) -> list[str]:
    """Mean over seeds of the study's PBSD metrics per step; returns the markdown lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pbsd_agents.runlog import read_jsonl

    keys = ("h_pos", "h_neg", "logp_pos", "logp_neg", "pair_accuracy")
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.4), squeeze=False)
    lines = []
    for ax, env in zip(axes[0], envs):
        name = env.split("/")[-1]
        runs = sorted(runs_dir.glob(f"{name}__PBSD__s*/metrics.jsonl"))
        if not runs:
            continue
        series = [read_jsonl(f) for f in runs]
        n = min(len(s) for s in series)
        curve = {k: [statistics.mean(s[i][k] for s in series) for i in range(n)] for k in keys}
        steps = list(range(1, n + 1))
        for k in keys[:4]:
            ax.plot(steps, curve[k], label=k)
        ax.set_title(f"PBSD on {name} ({len(runs)} seeds)")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        k = max(1, n // 8)  # per-step values are noisy (8 pairs): compare the first and last k steps
        a = {key: statistics.mean(v[:k]) for key, v in curve.items()}
        z = {key: statistics.mean(v[-k:]) for key, v in curve.items()}
        w_a, w_z = (1 / (1 + math.exp(0.1 * (d["h_pos"] - d["h_neg"]))) for d in (a, z))
        lines.append(
            f"- {name} ({len(runs)} seeds, {n} steps; mean of the first {k} steps → the last {k}): h(y+) {a['h_pos']:+.1f} → "
            f"{z['h_pos']:+.1f}, h(y-) {a['h_neg']:+.1f} → {z['h_neg']:+.1f}, log π_θ(y+) {a['logp_pos']:.1f} → "
            f"{z['logp_pos']:.1f}, log π_θ(y-) {a['logp_neg']:.1f} → {z['logp_neg']:.1f}; pair accuracy at most "
            f"{max(curve['pair_accuracy']):.2f} in any step; loss weight σ(−β·margin) at the mean margin {w_a:.3f} → {w_z:.3f}."
        )
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return lines


def write_section(doc: Path, body: list[str]) -> None:
    text = doc.read_text() if doc.exists() else ""
    section = "\n".join([BEGIN, *body, END])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["pbsd/MathCalc-v0", "pbsd/ToolCall-v0"])
    p.add_argument("--batches", type=int, default=8, help="fresh batches of 8 tasks per env")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", type=float, default=1.0, help="the trainer's grad_clip")
    p.add_argument("--runs-dir", type=Path, default=None, help="a compare_methods.py runs folder: draw its PBSD curves")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "study-512" / "RESULTS.md")
    args = p.parse_args(argv)
    import pbsd_agents  # noqa: F401
    from transformers.utils import logging

    logging.disable_progress_bar()
    command = "python scripts/investigate_pbsd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    body = ["## Why PBSD learns slower here: its gradient, split in two", "",
            f"Written by `{command.strip()}`: at the initial weights, on {args.batches} fresh batches of 8 tasks "
            "drawn as the trainer draws them (one teacher sample y+ and one student sample y- per task, temperature 1). "
            "u+ = w·β·∇log π_θ(y+), u- = w·β·∇log π_θ(y-), w = σ(−β·margin); PBSD's ascent direction is u+ − u-; "
            "SFT's is ∇ of the token-mean log π_θ(y+) (SeqKD on the same y+). *along SFT*: length of the step, "
            f"after the trainer's gradient clip ({args.clip:g}), projected on SFT's direction. "
            "*‖mean u±‖ / mean ‖u±‖*: over the batches; 1 for a consistent direction, 1/√B "
            f"= {1 / math.sqrt(args.batches):.2f} for zero-mean noise.", "",
            "| env | margin | w | tokens y+ / y- | ‖u+‖ | ‖u-‖ | cos(u+, u-) | cos(PBSD, SFT) | cos(u+, SFT) | "
            "along SFT: PBSD / SFT | ‖mean u+‖ / mean ‖u+‖ | ‖mean u-‖ / mean ‖u-‖ |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for env in args.envs:
        m = results[env] = measure(env, args.batches, args.seed, args.clip)
        body.append(
            f"| {env} | {m['margin']:+.1f} | {m['weight']:.3f} | {m['len_pos']:.0f} / {m['len_neg']:.0f} | "
            f"{m['norm_pos']:.2f} | {m['norm_neg']:.2f} | {m['cos_pos_neg']:+.3f} | {m['cos_pbsd_sft']:+.3f} | "
            f"{m['cos_pos_sft']:+.3f} | {m['along_sft_pbsd']:.3f} / {m['along_sft_sft']:.3f} | "
            f"{m['avg_norm_pos'] / m['norm_pos']:.2f} | {m['avg_norm_neg'] / m['norm_neg']:.2f} |")
    if args.runs_dir is not None:
        png = args.doc.parent / "pbsd_study_curves.png"
        lines = run_curves(args.runs_dir, args.envs, png)
        if lines:
            body += ["", "The study's PBSD runs, mean over seeds per step:", "", *lines, "",
                     f"![PBSD margin and likelihood curves in the study]({png.name})"]
    (args.doc.parent / "investigate_pbsd.json").write_text(json.dumps(results, indent=1))
    write_section(args.doc, body + [""])
    print(f"wrote the section into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
