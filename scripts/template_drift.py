#!/usr/bin/env python
"""Does a chat template render tool-calling conversations turn by turn exactly as in one go?

    python scripts/template_drift.py [--tokenizer PATH_OR_ID] [--n 100] [--env pbsd/ToolCall-v0 ...]

Builds conversations by playing each environment's oracle turns (real tool results), student and
teacher views, and runs :func:`pbsd_agents.invariants.template_drift` on them with the given
tokenizer (default: the Qwen2.5 files in the project's shared data folder). Prints one report per env.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QWEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tokenizers" / "qwen2.5-instruct"


def oracle_conversations(env_id: str, n: int, **env_kwargs) -> list:
    import gymnasium

    import pbsd_agents  # noqa: F401
    from pbsd_agents.rollout import Conversation

    env = gymnasium.make(env_id, **env_kwargs)
    total = env.unwrapped.num_tasks
    out = []
    for i in range(n if total is None else min(n, total)):
        obs, info = env.reset(options={"index": i})
        student = list(obs)
        teacher = list(env.unwrapped.teacher_messages(list(obs), info["privileged"]))
        for action in env.unwrapped.oracle_actions():
            new, _, terminated, truncated, _ = env.step(action)
            for msgs in (student, teacher):
                msgs += [{"role": "assistant", "content": action}] + list(new)
            if terminated or truncated:
                break
        out.append(Conversation(student, teacher, info["tools"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", default=str(QWEN))
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
