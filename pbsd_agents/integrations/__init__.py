"""Bridges to tools people already run: TRL trainers (:mod:`.trl`) and Hugging Face datasets (:mod:`.datasets`).

Both need the ``trl`` extra (``pip install "pbsd-agents[trl]"``); the modules import it lazily, so
importing this package costs nothing.
"""

from __future__ import annotations

import importlib


def require(module: str, extra: str = "trl"):
    """Import ``module`` or raise a one-line ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed; install it with: pip install \"pbsd-agents[{extra}]\"") from None
