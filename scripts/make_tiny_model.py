#!/usr/bin/env python
"""Write a tiny randomly initialised Qwen2 chat model folder, so `--model <dir>` works with no download.

    python scripts/make_tiny_model.py OUT_DIR [--tokenizer PATH] [--hidden 64] [--layers 2] [--mean-turn 24]

The tokenizer (and its tool-calling chat template) comes from PATH, a tokenizer folder such as
Qwen2.5-Instruct's, or is the kit's byte-level ChatML tokenizer when no PATH is given; its eos is
set to the template's end-of-turn token, as in an Instruct model.
The weights are random (seeded), with one tweak: the end-of-turn token is made likely enough that
a sampled turn lasts about ``--mean-turn`` tokens (see ``pbsd_agents.loading.build_tiny_model``);
0 turns the tweak off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def make_tiny_model(out: str | Path, tokenizer: str | Path | None = None, *, hidden: int = 64, layers: int = 2,
                    mean_turn: float = 24.0, seed: int = 0) -> Path:
    from transformers import AutoTokenizer

    from pbsd_agents.chat import ChatRenderer
    from pbsd_agents.loading import build_tiny_model, byte_tokenizer

    out = Path(out)
    tok = byte_tokenizer() if tokenizer is None else AutoTokenizer.from_pretrained(str(tokenizer))
    renderer = ChatRenderer(tok)
    tok.eos_token = renderer.eot_token  # an Instruct model ends its turns with the template's end-of-turn token
    model = build_tiny_model(tok, hidden_size=hidden, num_layers=layers, seed=seed,
                             eot_mean_length=mean_turn or None, eot_token=renderer.eot_token)
    model.generation_config.eos_token_id = list(ChatRenderer(tok).stop_ids)  # rebuilt: eos changed above
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write (created)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer folder with a chat template, e.g. Qwen2.5-Instruct's (default: the kit's byte-level tokenizer)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers (default: %(default)s)")
    p.add_argument("--mean-turn", type=float, default=24.0, help="about how many tokens a sampled turn lasts; 0 = untouched random model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.tokenizer is not None and not Path(args.tokenizer).exists():
        print(f"error: tokenizer folder {args.tokenizer} not found", file=sys.stderr)
        return 2
    out = make_tiny_model(args.out, args.tokenizer, hidden=args.hidden, layers=args.layers, mean_turn=args.mean_turn, seed=args.seed)
    n = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({n / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
