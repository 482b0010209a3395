#!/usr/bin/env python
"""Generation throughput: HFEngine vs a bare ``model.generate`` loop, same prompts, same batches.

    python scripts/bench_generate.py [--model DIR] [--batch 1 8 32] [--new-tokens 64] [--repeats 3]

Prompts are real student prompts of ``pbsd/ToolCall-v0`` rendered with the model's chat template.
Without ``--model`` a tiny random Qwen2 (hidden 64, 2 layers, the Qwen2.5 tokenizer from the shared
data folder) is built in memory, with no end-of-turn tweak, so every row runs the full
``--new-tokens`` in both loops and tokens/s compare like for like. The bare loop samples with
``do_sample=True, top_k=0, top_p=1.0, temperature=1.0``; HFEngine does the same and also records the
sampled ids' log-probabilities. Each cell is the median of ``--repeats`` timed runs after one warm-up,
the two loops alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT.parent / "shared" / "data" / "tokenizers" / "qwen2.5-instruct"


def load(model_dir: str | None, device: str):
    import torch  # noqa: F401
    from transformers import AutoTokenizer

    from pbsd_agents.chat import ChatRenderer
    from pbsd_agents.loading import build_tiny_model, load_policy
    from pbsd_agents.models import Policy

    if model_dir:
        policy = load_policy(model_dir, device=device, frozen_teacher=False)
        return policy, policy.renderer
    if not QWEN.exists():
        sys.exit(f"no --model given and the Qwen2.5 tokenizer is not at {QWEN}")
    tok = AutoTokenizer.from_pretrained(str(QWEN))
    model = build_tiny_model(tok, hidden_size=64, num_layers=2).to(device)
    return Policy(model, tok, frozen_teacher=False), ChatRenderer(tok)


def prompts_for(renderer, n: int) -> list[list[int]]:
    import gymnasium

    import pbsd_agents  # noqa: F401

    env = gymnasium.make("pbsd/ToolCall-v0")
    out = []
    for i in range(n):
        obs, info = env.reset(options={"index": i})
        out.append(renderer.prompt_ids(obs, info["tools"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: a tiny random Qwen2 built in memory)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from pbsd_agents.engines import HFEngine, SamplingParams

    policy, renderer = load(args.model, args.device)
    model = policy.model
    engine = HFEngine(policy, batch_size=max(args.batch), stop_ids=renderer.stop_ids)
    pad = engine.pad_id
    all_prompts = prompts_for(renderer, max(args.batch))
    sampling = SamplingParams(temperature=1.0, max_new_tokens=args.new_tokens)

    def bare(prompts):
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids.to(args.device), attention_mask=mask.to(args.device), do_sample=True,
                                 top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=args.new_tokens,
                                 eos_token_id=list(renderer.stop_ids), pad_token_id=pad)
        return sum(_kept(row, renderer.stop_ids) for row in out[:, width:].tolist())

    def ours(prompts):
        return sum(len(g.ids) for g in engine.generate(prompts, sampling))

    def timed(fn, prompts):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = fn(prompts)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, model "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, vocab {model.config.vocab_size}, "
          f"{args.new_tokens} new tokens per row, median of {args.repeats}")
    print(f"{'batch':>5} {'bare generate tok/s':>20} {'HFEngine tok/s':>15} {'ratio':>6}")
    for b in args.batch:
        prompts = all_prompts[:b]
        bare(prompts), ours(prompts)  # warm-up
        rb, ro = [], []
        for _ in range(args.repeats):
            rb.append(timed(bare, prompts))
            ro.append(timed(ours, prompts))
        mb, mo = statistics.median(rb), statistics.median(ro)
        print(f"{b:>5} {mb:>20.0f} {mo:>15.0f} {mo / mb:>6.2f}")
    return 0


def _kept(row: list[int], stops) -> int:
    """Tokens up to and including the first stop token (what a rollout keeps)."""
    for i, t in enumerate(row):
        if t in stops:
            return i + 1
    return len(row)


if __name__ == "__main__":
    sys.exit(main())
