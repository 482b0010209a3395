"""The ``pbsd-agents`` command line: a thin layer over the Python API, one module per subcommand.

    pbsd-agents train | eval | rollout | envs | export | plot   (each with --help)

Each subcommand module has ``HELP`` (one line), optionally ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> exit code``, and is registered in :data:`SUBCOMMANDS`. Heavy libraries (torch,
transformers) are imported inside ``run`` only, so ``--help`` and ``envs`` start fast. Errors a user
can fix (an unknown env id, a missing model) are one line on stderr and exit code 2.

Example:
    >>> main(["envs"])  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    pbsd/BFCL-v0 Berkeley Function Calling Leaderboard, single turn: ...
    0
"""

from __future__ import annotations

import argparse
import sys

from . import envs, export, plot, rollout, train
from . import eval as eval_
from .common import CLIError, HelpFormatter

__all__ = ["CLIError", "SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS = {"train": train, "eval": eval_, "rollout": rollout, "envs": envs, "export": export, "plot": plot}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbsd-agents",
        description="Train tool-using LLM agents by on-policy self-distillation (PBSD), and inspect their rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        description = getattr(module, "DESCRIPTION", module.HELP[0].upper() + module.HELP[1:] + ".")
        p = sub.add_parser(name, help=module.HELP, description=description, formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except (CLIError, ValueError, OSError) as exc:  # OSError: a file or folder problem (missing, full disk, in use)
        # Bad input is one line naming what is wrong, not a traceback.
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        print(f"pbsd-agents {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pbsd-agents {args.command}: interrupted", file=sys.stderr)
        return 130
