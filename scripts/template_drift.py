#!/usr/bin/env python
"""Does a chat template render tool-calling conversations turn by turn exactly as in one go?

    python scripts/template_drift.py --tokenizer PATH_OR_ID [--n 100] [--env pbsd/ToolCall-v0 ...]

Builds conversations by playing each environment's oracle turns (real tool results, student and
teacher views, :func:`pbsd_agents.episode.play_oracle`) and runs
:func:`pbsd_agents.invariants.template_drift` on them with the given tokenizer. Prints one report per env.
"""

from __future__ import annotations

import argparse
import sys


def oracle_conversations(env_id: str, n: int, **env_kwargs) -> list:
    """The conversations of the oracle on tasks 0 .. n-1 of ``env_id`` (fewer if the split is smaller)."""
    from pbsd_agents.envs.registry import make_env
    from pbsd_agents.episode import play_oracle

    env = make_env(env_id, **env_kwargs)
    total = env.unwrapped.num_tasks
    return [play_oracle(env, options={"index": i}).conversation for i in range(n if total is None else min(n, total))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="tokenizer folder or Hugging Face id, with a chat template")
    ap.add_argument("--n", type=int, default=100, help="tasks per environment")
    ap.add_argument("--env", nargs="+", default=["pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"])
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from pbsd_agents.invariants import template_drift

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    ok = True
    for env_id in args.env:
        report = template_drift(tok, oracle_conversations(env_id, args.n))
        print(f"{env_id}: {report.summary()}")
        ok &= report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
