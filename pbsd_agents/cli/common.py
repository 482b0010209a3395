"""Pieces shared by the subcommands: the user-error type, help formatting, ``K=V`` flags, env checks, model loading.

Nothing here imports torch or transformers: ``--help`` must stay fast.
"""

from __future__ import annotations

import argparse

__all__ = ["CLIError", "HelpFormatter", "load_model", "parse_kv", "probe_env", "quiet_transformers"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Appends each option's default to its help, unless it has none worth showing (None, off, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default" in text or not action.option_strings or action.required
                or default is None or default is False or default is argparse.SUPPRESS or default == []):
            return text
        return text + " (default: %(default)s)"


def parse_kv(items: list[str] | None, flag: str) -> dict:
    """Repeated ``K=V`` flags (``--algo-arg``, ``--env-arg``) as a dict; values are read as YAML
    (numbers, booleans, lists) and ``-`` in keys becomes ``_``.

    Example:
        >>> parse_kv(["beta=0.1", "pair-filter=verifier"], "--algo-arg")
        {'beta': 0.1, 'pair_filter': 'verifier'}
    """
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def probe_env(env_id: str, env_kwargs: dict) -> int | None:
    """Make the env once, before any model loads: a bad id or argument fails here as one line.
    Returns the split's number of tasks (None: procedural)."""
    from ..envs.registry import count_tasks, resolve_env_id

    resolve_env_id(env_id)
    try:
        return count_tasks(env_id, **env_kwargs)
    except (ImportError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        if not detail.startswith("cannot make env"):
            detail = f"cannot make env {env_id!r} with {env_kwargs}: {detail}"
        raise CLIError(detail) from None


def load_model(model: str, **kwargs):
    """:func:`~pbsd_agents.checkpoint.load_any`, with a model that cannot be found as a one-line error."""
    from ..checkpoint import load_any

    quiet_transformers()
    try:
        return load_any(model, **kwargs)
    except (FileNotFoundError, ImportError, ValueError) as exc:  # ImportError: a preset's package is missing
        raise CLIError(str(exc).splitlines()[0]) from None


def add_threads_flag(parser) -> None:
    from ..config import TrainConfig

    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help=TrainConfig.__dataclass_fields__["threads"].metadata["help"])


def follow_threads(collector, threads: int) -> None:
    """Set torch's CPU threads as ``--threads`` says, re-picked after every generation round when automatic
    (:class:`~pbsd_agents.loading.CpuThreads`)."""
    from ..loading import CpuThreads

    collector.after_round = CpuThreads(threads).update


def quiet_transformers() -> None:
    """transformers' own bars for loading and saving weights would cut through the kit's progress bars."""
    from transformers.utils import logging

    logging.disable_progress_bar()
