"""BFCL multi-turn backends: the package's classes run as an episode's tools, and the per-turn check.

A multi-turn task names its backend classes (``GorillaFileSystem``, ``TwitterAPI``...) and an
``initial_config`` for them. :class:`Backends` builds fresh instances of those classes from it,
dispatches a call by function name to the instance's method, and keeps every call's result as the
text the leaderboard compares. Calls are given as a name and keyword arguments (parsed by the kit's
parsers, or by :func:`parse_gold_call` for the data's own gold strings): nothing is ever evaluated.

:func:`check_turn` is the leaderboard's multi-turn rule for one user turn. The model's calls and
the gold calls run on two separate sets of instances, each carried over from turn to turn; after
turn k (when its gold is not empty) the turn passes when the model made at least one call in it,
every public attribute of every gold instance equals the model instance's, and every result of the
turn's gold calls is among the results of all the model's calls so far (counted with multiplicity).

Example:
    >>> parse_gold_call("mv(source='a.txt', destination='tmp')")
    ('mv', [], {'source': 'a.txt', 'destination': 'tmp'})
    >>> parse_gold_call("sort('report.pdf')")
    ('sort', ['report.pdf'], {})
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from pbsd_agents.tools.base import Tool

from .bfcl_package import STATELESS, backend_class, function_doc_file
from .checker import bfcl_schema_to_json_schema
from .data import read_records

__all__ = ["Backends", "TurnCheck", "check_turn", "doc_tool", "function_docs", "parse_gold_call", "positional_names", "result_text"]

ERROR_PREFIX = "Error during execution: "  # how a failed call reads, on both sides of the comparison


def parse_gold_call(text: str) -> tuple[str, list, dict]:
    """``(name, positional args, keyword args)`` of one gold call string such as ``"cd(folder='x')"``.

    The arguments must be literals (``ast.literal_eval``); anything else is a ``ValueError``.
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"gold call {text!r} is not a call: {exc.msg}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"gold call {text!r} is not a call of a plain function name")
    try:
        args = [_json_like(ast.literal_eval(a)) for a in node.args]
        kwargs = {k.arg: _json_like(ast.literal_eval(k.value)) for k in node.keywords if k.arg is not None}
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(f"gold call {text!r} has an argument that is not a literal: {exc}") from None
    if len(kwargs) != len(node.keywords):
        raise ValueError(f"gold call {text!r} uses **kwargs")
    return node.func.id, args, kwargs


def _json_like(value: Any) -> Any:
    # Tuples become lists, as the kit's call parsers make them, so gold and model calls look alike.
    if isinstance(value, (tuple, list)):
        return [_json_like(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_like(v) for k, v in value.items()}
    return value


def result_text(value: Any) -> str:
    """A call's result as the leaderboard writes it: a string as is, a dict as JSON, anything else ``str``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def function_docs(class_name: str) -> list[dict]:
    """The function docs of a backend class (BFCL schemas, from the package's ``multi_turn_func_doc``)."""
    return list(read_records(function_doc_file(class_name)))


_TOOLS: dict[tuple[str, str], Tool] = {}


def doc_tool(class_name: str, doc: dict, fn: Callable[..., Any]) -> Tool:
    """A :class:`Tool` for one function doc, calling ``fn``. The schema and validator are built once
    per function per process (a tool is copied with the new ``fn``)."""
    key = (class_name, doc["name"])
    if key not in _TOOLS:
        params = bfcl_schema_to_json_schema(doc.get("parameters") or {"type": "dict", "properties": {}})
        _TOOLS[key] = Tool(doc["name"], doc.get("description") or "", params, fn)
    tool = copy.copy(_TOOLS[key])
    tool.fn = fn
    return tool


def positional_names(class_name: str, method: str, count: int) -> list[str]:
    """The names of a method's first ``count`` parameters (to name a gold call's positional arguments)."""
    params = [p for p in list(inspect.signature(getattr(backend_class(class_name), method)).parameters.values())[1:]
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # [1:]: self
    if count > len(params):
        raise ValueError(f"{method} takes {len(params)} positional arguments, a gold call gives {count}")
    return [p.name for p in params[:count]]


class Backends:
    """Fresh instances of a task's backend classes, and the results of every call made on them.

    Args:
        classes: the task's ``involved_classes``.
        initial_config: the task's ``initial_config`` (copied: the instances never share it).
        long_context: load the scenarios in their long-context form (category ``multi_turn_long_context``).
        validators: function name -> a :class:`Tool` whose ``validate`` checks that function's arguments.

    Attributes:
        instances: class name -> instance.
        results: the text of every call's result, in call order (failed calls included).
    """

    def __init__(self, classes: list[str], initial_config: dict, long_context: bool, validators: dict[str, Tool]):
        self.instances: dict[str, Any] = {}
        self.methods: dict[str, Callable[..., Any]] = {}
        for name in classes:
            instance = backend_class(name)()
            if name not in STATELESS:
                instance._load_scenario(copy.deepcopy((initial_config or {}).get(name, {})), long_context=long_context)
            self.instances[name] = instance
            for doc in function_docs(name):
                self.methods[doc["name"]] = getattr(instance, doc["name"])
        self.validators = validators
        self.results: list[str] = []

    def invoke(self, name: str, arguments: dict) -> str:
        """Run one already validated call; record and return its result text (exceptions become text)."""
        try:
            # A copy: some methods keep an argument's list in their state and extend it later, which
            # would otherwise change the caller's data (a task's cached gold calls among them).
            text = result_text(self.methods[name](**copy.deepcopy(arguments)))
        except Exception as exc:  # noqa: BLE001  (a backend's failure is the call's result, as on the leaderboard)
            text = f"{ERROR_PREFIX}{exc}"
        self.results.append(text)
        return text

    def call(self, name: str, arguments: Any) -> str:
        """Validate a call against its function doc, then :meth:`invoke` it; a call that cannot run
        records the same error text the model would read."""
        tool = self.validators.get(name)
        if tool is None or name not in self.methods:
            text = f"error: unknown tool '{name}'"
        else:
            problem = tool.validate(arguments)
            if problem is None:
                return self.invoke(name, arguments)
            text = f"error: invalid arguments for tool '{name}': {problem}"
        self.results.append(text)
        return text

    def state_differences(self, gold: "Backends") -> list[str]:
        """The public attributes in which these instances differ from ``gold``'s (the leaderboard's state check)."""
        out = []
        for cls, gold_instance in gold.instances.items():
            mine = self.instances[cls]
            for attr, want in vars(gold_instance).items():
                if attr.startswith("_"):
                    continue
                if getattr(mine, attr, _MISSING) != want:
                    out.append(f"{cls}.{attr}")
        return out


_MISSING = object()


@dataclass(frozen=True)
class TurnCheck:
    """The verdict on one user turn: ``passed`` is None for a turn with no gold calls (not scored)."""

    passed: bool | None
    error_type: str | None = None
    message: str = ""


def check_turn(model: Backends, gold: Backends, gold_results: list[str], model_called: bool, scored: bool) -> TurnCheck:
    """The leaderboard's check after one user turn (see the module docstring).

    Args:
        model, gold: the two sets of instances, after the turn's model calls and gold calls.
        gold_results: the results of this turn's gold calls.
        model_called: whether the model made at least one call in this turn.
        scored: whether the turn has gold calls (a turn without them is not checked).
    """
    if not scored:
        return TurnCheck(None)
    if not model_called:
        return TurnCheck(False, "empty_turn", "no function call in a turn that needs some")
    diffs = model.state_differences(gold)
    if diffs:
        return TurnCheck(False, "state_mismatch", f"the state differs from the gold run's in {', '.join(diffs[:5])}")
    missing = Counter(gold_results) - Counter(model.results)
    if missing:
        first = next(iter(missing))
        return TurnCheck(False, "response_mismatch", f"{sum(missing.values())} gold result(s) never returned to the "
                                                     f"model, e.g. {first[:120]!r}")
    return TurnCheck(True)
