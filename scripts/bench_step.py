"""Time per training step, split into rollout / teacher scoring / update, for each algorithm.

    python scripts/bench_step.py [--model DIR] [--env pbsd/MathCalc-v0] [--steps 3] [--tasks-per-step 8]

Without --model a tiny random Qwen2 (byte tokenizer) is built in a temp folder. Prints a markdown
table of medians over the steps (the first step is dropped as warm-up when there are 3 or more).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pbsd_agents.runlog import read_jsonl
from pbsd_agents.trainer import TrainConfig, Trainer

ALGOS = {"pbsd": {}, "opsd": {}, "grpo": {"group_size": 2}, "sft": {"only_successful": False}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder or id (default: a tiny random model)")
    p.add_argument("--env", default="pbsd/MathCalc-v0")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tasks-per-step", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        from pbsd_agents.loading import build_tiny_model, byte_tokenizer

        tok = byte_tokenizer()
        build_tiny_model(tok, hidden_size=64, num_layers=2).save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        model = str(tmp / "model")
    print(f"| algo | rollout s | teacher scoring s | update s (incl. teacher scoring) | trajectories/step |")
    print("|---|---|---|---|---|")
    for algo, algo_args in ALGOS.items():
        out = tmp / algo
        cfg = TrainConfig(model=model, env=args.env, algo=algo, algo_args=algo_args, steps=args.steps,
                          tasks_per_step=args.tasks_per_step, eval_tasks=1, pass_k=1, eval_every=0, save_every=0,
                          max_new_tokens=args.max_new_tokens, max_tokens=4 * args.max_new_tokens, out=str(out), progress=False)
        Trainer(cfg).train()
        rows = read_jsonl(out / "metrics.jsonl")
        rows = rows[1:] if len(rows) >= 3 else rows
        med = lambda k: statistics.median(r.get(k, 0.0) or 0.0 for r in rows)  # noqa: E731
        per_step = rows[-1]["trajectories"] / rows[-1]["step"]
        print(f"| {algo} | {med('collect_s'):.2f} | {med('teacher_score_s'):.2f} | {med('update_s'):.2f} | {per_step:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
