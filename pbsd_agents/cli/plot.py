"""``pbsd-agents plot``: draw a run folder's learning curves."""

from __future__ import annotations

import argparse

HELP = "draw a run folder's learning curves (curves.png)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="run folder (runs/<name>)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/curves.png)")


def run(args: argparse.Namespace) -> int:
    from ..plotting import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0
