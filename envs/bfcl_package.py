"""Where BFCL data comes from when no path is given: the installed ``bfcl-eval`` package.

The Berkeley Function Calling Leaderboard ships on PyPI as ``bfcl-eval``: its data files
(``bfcl_eval/data/BFCL_v4_<category>.json``, the answers in ``possible_answer/``, the multi-turn
function docs in ``multi_turn_func_doc/``) and the executable multi-turn backends
(``bfcl_eval.eval_checker.multi_turn_eval.func_source_code``). Its declared dependencies pin old
versions and pull API clients the kit never uses, so it is installed without them::

    pip install 'pbsd-agents[bfcl]' && pip install --no-deps bfcl-eval==2026.3.23

This module only finds files and classes in it; nothing of the package runs here but the backend
classes' own constructors and methods (never its call executor, which evaluates model text).

Example:
    >>> "live_multiple" in AST_CATEGORIES, MULTI_TURN_CATEGORIES[0]
    (True, 'multi_turn_base')
    >>> check_category("simple", AST_CATEGORIES)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown BFCL category 'simple'; valid: simple_python, multiple, ...
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Sequence

INSTALL = "pip install 'pbsd-agents[bfcl]' && pip install --no-deps bfcl-eval==2026.3.23"
VERSION_PREFIX = "BFCL_v4"

# The single-turn (AST) categories of the leaderboard's Python suite, in its own order.
AST_CATEGORIES = (
    "simple_python", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
    "irrelevance", "live_irrelevance", "live_relevance",
)
MULTI_TURN_CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")

# The leaderboard's overall scores: how each summary combines its categories.
#   unweighted: the mean of the category accuracies; weighted: the mean over all their tasks.
OVERALL = {
    "non_live": ("unweighted", ("simple_python", "multiple", "parallel", "parallel_multiple")),
    "live": ("weighted", ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")),
    "multi_turn": ("unweighted", MULTI_TURN_CATEGORIES),
}

# Backend class -> (module under func_source_code, function-doc file); the multi-turn suite's classes.
BACKENDS = {
    "GorillaFileSystem": ("gorilla_file_system", "gorilla_file_system.json"),
    "MathAPI": ("math_api", "math_api.json"),
    "MessageAPI": ("message_api", "message_api.json"),
    "TwitterAPI": ("posting_api", "posting_api.json"),
    "TicketAPI": ("ticket_api", "ticket_api.json"),
    "TradingBot": ("trading_bot", "trading_bot.json"),
    "TravelAPI": ("travel_booking", "travel_booking.json"),
    "VehicleControlAPI": ("vehicle_control", "vehicle_control.json"),
}
STATELESS = frozenset({"MathAPI"})  # built without an initial_config
_BACKEND_PACKAGE = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"


def installed() -> bool:
    """Whether ``bfcl_eval`` can be imported."""
    return importlib.util.find_spec("bfcl_eval") is not None


def data_dir() -> Path:
    """The package's ``data`` folder; a ``ValueError`` with the install command when it is missing."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"BFCL data comes from the bfcl-eval package, which is not installed: {INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not folder.is_dir():
        raise ValueError(f"the installed bfcl-eval has no data folder at {folder}; reinstall it: {INSTALL}")
    return folder


def check_category(category: Any, valid: Sequence[str]) -> str:
    """``category`` if it is one of ``valid``, else a one-line ``ValueError`` naming them."""
    if not isinstance(category, str) or category not in valid:
        raise ValueError(f"unknown BFCL category {category!r}; valid: {', '.join(valid)}")
    return category


def categories_arg(category: Any, valid: Sequence[str]) -> list[str]:
    """A ``category=`` argument (one name, a list of names, or ``"all"``) as a list of valid names."""
    if category == "all":
        return list(valid)
    names = [category] if isinstance(category, str) else category
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"category must be a BFCL category, a list of them or 'all', got {category!r}; "
                         f"valid: {', '.join(valid)}")
    return [check_category(c, valid) for c in dict.fromkeys(names)]


def category_files(category: str) -> tuple[Path, Path | None]:
    """(data file, answer file or None) of a category in the installed package."""
    folder = data_dir()
    data = folder / f"{VERSION_PREFIX}_{category}.json"
    answer = folder / "possible_answer" / data.name
    if not data.is_file():
        raise ValueError(f"the installed bfcl-eval has no {data.name}; expected bfcl-eval==2026.3.23 ({INSTALL})")
    return data, answer if answer.is_file() else None


def function_doc_file(class_name: str) -> Path:
    """The multi-turn function-doc file (JSON lines) of a backend class."""
    return data_dir() / "multi_turn_func_doc" / BACKENDS[_known(class_name)][1]


def backend_class(class_name: str) -> type:
    """The backend class itself, imported from the package (one-line error when it cannot be)."""
    module_name = f"{_BACKEND_PACKAGE}.{BACKENDS[_known(class_name)][0]}"
    data_dir()  # the install hint first, when the package is missing
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # e.g. math_api needs mpmath, which --no-deps does not install
        raise ValueError(f"the BFCL backend {class_name} needs the package {exc.name!r}, which is not installed "
                         f"(pip install 'pbsd-agents[bfcl]' installs what the backends import)") from None
    return getattr(module, class_name)


def _known(class_name: str) -> str:
    if class_name not in BACKENDS:
        raise ValueError(f"unknown BFCL backend class {class_name!r}; known: {', '.join(BACKENDS)}")
    return class_name
