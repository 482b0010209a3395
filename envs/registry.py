"""Finding environments by id: one place that validates an id, makes an env and counts its tasks.

Any gymnasium-registered id works, not only the ``pbsd/`` ones, including gymnasium's
``module:Name-v0`` form, which imports ``module`` first (so a user's module can register its envs).

Example:
    >>> resolve_env_id("pbsd/MathCalc-v0")
    'pbsd/MathCalc-v0'
    >>> count_tasks("pbsd/ToolCall-v0") is None       # procedural: an infinite split
    True
    >>> resolve_env_id("pbsd/Nope-v0")                # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown env 'pbsd/Nope-v0'; registered envs: ...
"""

from __future__ import annotations

import importlib

import gymnasium

__all__ = ["count_tasks", "make_env", "registered_ids", "resolve_env_id"]


def registered_ids() -> list[str]:
    """Every id in gymnasium's registry that is not one of gymnasium's own (``pbsd/`` ids first)."""
    def own(ep) -> bool:  # gymnasium's ids point into gymnasium (placeholders are its functions)
        module = ep if isinstance(ep, str) else getattr(ep, "__module__", "")
        return not module.startswith("gymnasium.")

    ids = [k for k, spec in gymnasium.registry.items() if own(spec.entry_point)]
    return sorted(ids, key=lambda k: (not k.startswith("pbsd/"), k))


def resolve_env_id(env_id: str) -> str:
    """Return ``env_id`` unchanged if gymnasium can make it; otherwise raise a one-line ``ValueError``.

    ``module:Name-v0`` imports ``module`` first (gymnasium's convention); an import failure is reported
    as such. The id is returned as given, so ``gymnasium.make`` (and a later replay) imports the module too.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"an env id is a non-empty string, got {env_id!r}")
    import pbsd_agents.envs  # noqa: F401  (registers the pbsd/ ids)

    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"env {env_id!r}: cannot import module {module!r} ({exc})") from None
    if name not in gymnasium.registry:
        raise ValueError(f"unknown env {env_id!r}; registered envs: {', '.join(registered_ids())}")
    return env_id


def make_env(env_id: str, **kwargs) -> gymnasium.Env:
    """``gymnasium.make(env_id, **kwargs)`` after :func:`resolve_env_id`; bad kwargs raise ``ValueError``."""
    resolve_env_id(env_id)
    try:
        return gymnasium.make(env_id, **kwargs)
    except TypeError as exc:
        if "argument" not in str(exc):  # not a bad constructor argument: a bug in the env, keep its traceback
            raise
        raise ValueError(f"cannot make env {env_id!r} with {kwargs}: {exc}") from None


def count_tasks(env_id: str, **kwargs) -> int | None:
    """``num_tasks`` of the env's split (``None``: procedural, infinite), from a throw-away instance."""
    env = make_env(env_id, **kwargs)
    try:
        return env.unwrapped.num_tasks
    finally:
        env.close()
