#!/usr/bin/env python
"""Generation throughput: HFEngine vs a bare ``model.generate`` loop, same prompts, same batches.

    python scripts/bench_generate.py (--model DIR | --tokenizer DIR) [--batch 1 8 32] [--new-tokens 64] [--repeats 3]

Prompts are real student prompts of ``pbsd/ToolCall-v0`` rendered with the model's chat template.
Without ``--model`` a tiny random Qwen2 (hidden 64, 2 layers, the ``--tokenizer`` folder, e.g.
Qwen2.5-Instruct's) is built in memory, with no end-of-turn tweak, so every row runs the full
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


def load(model_dir: str | None, tokenizer: str, device: str):
    from transformers import AutoTokenizer

    from pbsd_agents.loading import build_tiny_model, load_policy
    from pbsd_agents.models import Policy

    if model_dir:
        return load_policy(model_dir, device=device, frozen_teacher=False)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    return Policy(build_tiny_model(tok, hidden_size=64, num_layers=2).to(device), tok, frozen_teacher=False)


def prompts_for(renderer, n: int) -> list[list[int]]:
    from pbsd_agents.envs.registry import make_env
    from pbsd_agents.episode import Episode

    env = make_env("pbsd/ToolCall-v0")
    convs = [Episode(env, options={"index": i}).conversation for i in range(n)]
    return [renderer.prompt_ids(c.student_messages, c.tools, tool_format=c.tool_format) for c in convs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: a tiny random Qwen2 built in memory)")
    ap.add_argument("--tokenizer", default=None, help="without --model: the tiny model's tokenizer folder (e.g. Qwen2.5-Instruct's)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if not (args.model or args.tokenizer):
        ap.error("pass --model DIR, or --tokenizer DIR for a tiny random model")

    import torch

    from pbsd_agents.engines import HFEngine, SamplingParams

    policy = load(args.model, args.tokenizer, args.device)
    model, renderer = policy.model, policy.renderer
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
