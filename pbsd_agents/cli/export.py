"""``pbsd-agents export``: a checkpoint as a plain transformers model folder."""

from __future__ import annotations

import argparse

HELP = "export a checkpoint as a plain transformers model folder"
DESCRIPTION = ("Copy a checkpoint's model (or LoRA adapter) and tokenizer to --out. With --merge, a LoRA adapter is "
               "merged into its base model so plain transformers can load the result.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (runs/<name>/checkpoints/step_XXXXXX)")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base model")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import export
    from .common import quiet_transformers

    quiet_transformers()
    print(export(args.checkpoint, args.out, merge=args.merge))
    return 0
