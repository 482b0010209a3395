"""``pbsd-agents plot``: draw a run folder's learning curves, or several runs overlaid."""

from __future__ import annotations

import argparse

from .common import CLIError

HELP = "draw a run folder's learning curves (curves.png), or several runs overlaid to compare them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN", help="run folder (runs/<name>); several are overlaid")
    p.add_argument("--out", default=None, help="PNG path (default with one run: RUN/curves.png; needed with several)")
    p.add_argument("--label", action="append", default=None,
                   help="a run's name in the legend, once per RUN in order (default: its folder name and algorithm)")


def run(args: argparse.Namespace) -> int:
    from ..plotting import plot_runs

    if len(args.run_dirs) > 1 and not args.out:
        raise CLIError("several runs need --out FILE.png (a comparison belongs to no single run folder)")
    if args.label and len(args.label) != len(args.run_dirs):
        raise CLIError(f"--label given {len(args.label)} time(s) for {len(args.run_dirs)} run(s); give one per RUN")
    out = args.out or f"{args.run_dirs[0]}/curves.png"
    print(plot_runs(args.run_dirs, out, labels=args.label))
    return 0
