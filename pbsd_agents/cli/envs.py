"""``pbsd-agents envs``: list the registered environments."""

from __future__ import annotations

import argparse

HELP = "list the registered environments (pbsd/ ones first, then any a user module registered)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    import gymnasium

    from ..envs import ENVIRONMENTS
    from ..envs.registry import registered_ids

    ids = registered_ids()
    width = max(len(k) for k in ids)
    for env_id in ids:
        entry = gymnasium.registry[env_id].entry_point
        if not isinstance(entry, str):  # registered with the class itself
            entry = f"{entry.__module__}:{entry.__qualname__}"
        print(f"{env_id:<{width}}  {ENVIRONMENTS[env_id][1] if env_id in ENVIRONMENTS else f'({entry})'}")
    return 0
