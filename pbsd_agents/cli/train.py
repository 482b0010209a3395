"""``pbsd-agents train``: every :class:`~pbsd_agents.config.TrainConfig` field is a flag, with its help.

Precedence: defaults < the run's ``config.yaml`` (with ``--resume``) < ``--config`` file < flags given.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..config import TrainConfig
from .common import parse_kv, quiet_transformers

HELP = "train a policy (PBSD by default); every flag has a default"
DESCRIPTION = ("Train a policy. `pbsd-agents train` alone runs the main job: PBSD with the embedded tiny model on "
               "the default environment, held-out success printed before and after.")
# dict fields take one K=V per flag, repeatable
DICT_FLAGS = {"algo_args": "--algo-arg", "env_kwargs": "--env-arg", "eval_env_kwargs": "--eval-env-arg"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: only flags given on the command line land in args, so they can win over a config file.
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        default, text = getattr(defaults, f.name), f.metadata.get("help", "")
        if f.name in DICT_FLAGS:
            p.add_argument(DICT_FLAGS[f.name], action="append", metavar="K=V", default=argparse.SUPPRESS,
                           help=f"{text} (repeatable)")
        elif isinstance(default, bool):
            p.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"{text} (default: {default})")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=argparse.SUPPRESS,
                           metavar=type(default).__name__.upper(), help=f"{text} (default: {default!r})")
    p.add_argument("--config", metavar="FILE.yaml", default=None, help="YAML file with any of the keys above (flags win)")


def build_config(args: argparse.Namespace) -> TrainConfig:
    import yaml

    given = {k: v for k, v in vars(args).items() if k not in ("_run", "command", "config")}
    values: dict = {}
    out = given.get("out")
    if given.get("resume") and out and (Path(out) / "config.yaml").exists():
        values.update(yaml.safe_load((Path(out) / "config.yaml").read_text()) or {})
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    for key, flag in DICT_FLAGS.items():
        attr = flag[2:].replace("-", "_")
        if attr in given:
            values[key] = {**values.get(key, {}), **parse_kv(given.pop(attr), flag)}
    values.update(given)
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from ..trainer import Trainer

    quiet_transformers()
    trainer = Trainer(build_config(args))
    summary = trainer.train()
    if not trainer.parallel.is_main:  # one line per run, not per process
        return 0
    before, after = summary["eval_before"]["success"], summary["eval_after"]["success"]
    print(f"held-out greedy success: {before:.3f} -> {after:.3f} ({summary['wall_s']:.0f} s)")
    return 0
