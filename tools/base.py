"""A tool: name, description, JSON Schema for its arguments, and a Python callable.

Arguments are validated with ``jsonschema`` before the call; every call runs under a time limit and
its output is cut to a size cap, so a slow or verbose tool cannot stall or flood a rollout. Nothing
here raises into the caller: a bad call becomes a :class:`ToolResult` with ``ok=False`` and a message
meant for the model.

A call runs in a thread of this process, because tools share state with their env (a shop's
database, a file system) that another process would not see. When it runs past its limit the
caller gets a timeout at once, and the thread is stopped: a :class:`ToolTimeout` is raised inside it
at its next Python instruction (a tool blocked inside one C call, e.g. ``time.sleep``, stops when that
call returns). So a hung tool does not keep a core busy and slow the calls after it.
"""

from __future__ import annotations

import copy
import ctypes
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import jsonschema

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_OUTPUT_CHARS = 4000


class ToolTimeout(BaseException):
    """Raised inside a tool's thread when its call ran past the time limit (a BaseException, so a
    tool's own ``except Exception`` cannot swallow it)."""


def _stop(thread: threading.Thread) -> None:
    """Raise :class:`ToolTimeout` in ``thread`` at its next Python instruction (CPython's async exception)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(ToolTimeout))


@dataclass
class ToolResult:
    """What a tool call returned, already rendered as the text the model will read."""

    ok: bool
    content: str
    error_type: str | None = None  # "unknown_tool", "invalid_arguments", "timeout", "tool_error"


class Tool:
    """A callable the model can invoke by name with JSON arguments.

    ``fn`` receives the validated arguments as keyword arguments and returns a ``str`` (shown as is)
    or any JSON-serialisable value (shown as compact JSON).

    Example:
        >>> add = Tool("add", "Add two integers.",
        ...            {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        ...             "required": ["a", "b"], "additionalProperties": False},
        ...            lambda a, b: f"result = {a + b}")
        >>> add(a=2, b=3).content
        'result = 5'
        >>> r = add.call({"a": "2", "b": 3})
        >>> r.ok, r.error_type
        (False, 'invalid_arguments')
        >>> r.content
        "error: invalid arguments for tool 'add': field 'a': '2' is not of type 'integer'"
        >>> add.to_openai()["function"]["name"]
        'add'
    """

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict,
        fn: Callable[..., Any],
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        check_arguments: bool = True,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool name must be a non-empty string, got {name!r}")
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ValueError(f"tool {name!r}: parameters must be a JSON Schema object, got {parameters!r}")
        if max_output_chars < 16:
            raise ValueError(f"tool {name!r}: max_output_chars must be >= 16, got {max_output_chars}")
        _check_schema_once(parameters)
        self.name = name
        self.description = description
        self.parameters = parameters
        self.fn = fn
        self.timeout_s = timeout_s
        self.max_output_chars = max_output_chars
        # False: only "arguments are a JSON object" is checked, for a benchmark whose tools check their own
        # arguments and whose results must match it call for call (the schema is still shown to the model).
        self.check_arguments = check_arguments
        self._validator = jsonschema.Draft202012Validator(parameters)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def to_openai(self) -> dict:
        """The OpenAI function-calling form that ``apply_chat_template(tools=...)`` accepts."""
        return {
            "type": "function",
            # A copy: callers (and gymnasium's checker) expect fresh data that they may mutate.
            "function": {"name": self.name, "description": self.description, "parameters": copy.deepcopy(self.parameters)},
        }

    def validate(self, arguments: Any) -> str | None:
        """Return None when ``arguments`` is valid, else a message naming the bad field."""
        if not isinstance(arguments, dict):
            return f"arguments must be a JSON object, got {type(arguments).__name__}"
        if not self.check_arguments:
            return None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(arguments))
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path)
        msg = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        return f"field '{where}': {msg}" if where else msg

    def __call__(self, **arguments: Any) -> ToolResult:
        return self.call(arguments)

    def call(self, arguments: Any) -> ToolResult:
        """Validate, run under the time limit, render and cap the output. Never raises."""
        try:
            problem = self.validate(arguments)
        except RecursionError:  # absurdly nested arguments: jsonschema recurses per level
            problem = "arguments are nested too deeply"
        if problem is not None:
            return ToolResult(False, f"error: invalid arguments for tool '{self.name}': {problem}", "invalid_arguments")
        box: dict[str, Any] = {}
        finished = threading.Lock()  # held by whoever decides first: the tool finishing, or the caller stopping it

        def target() -> None:
            try:
                try:
                    box["value"] = self.fn(**arguments)
                except (Exception, SystemExit) as exc:  # a tool's own failure (even sys.exit) is reported to the model
                    box["error"] = exc
                if finished.acquire(blocking=False):
                    return
                while True:  # the caller is stopping this call: its ToolTimeout arrives here, inside the handler
                    time.sleep(0.001)
            except ToolTimeout:  # stopped by the caller, which has reported the timeout already
                pass

        if self.timeout_s is None:
            target()
        else:
            # A daemon thread, never joined after a timeout: the rollout goes on while the thread is stopped.
            worker = threading.Thread(target=target, name=f"tool-{self.name}", daemon=True)
            worker.start()
            worker.join(self.timeout_s)
            if worker.is_alive():
                if finished.acquire(blocking=False):  # the tool has not finished: stop it (it can no longer finish)
                    _stop(worker)
                    return ToolResult(False, f"error: tool '{self.name}' timed out after {self.timeout_s:g}s", "timeout")
                worker.join()  # it finished just now: its result is in the box
        if "error" in box:
            exc = box["error"]
            return ToolResult(False, self._cap(f"error: {type(exc).__name__}: {exc}"), "tool_error")
        text = self._cap(render_output(box.get("value")))
        # A tool may report failure by returning "error: ..." instead of raising; count it as one.
        return ToolResult(not text.startswith("error:"), text, "tool_error" if text.startswith("error:") else None)

    def _cap(self, text: str) -> str:
        if len(text) <= self.max_output_chars:
            return text
        note = f"... [truncated {len(text) - self.max_output_chars} chars]"
        keep = self.max_output_chars - len(note)
        if keep <= 0:  # a cap too small for the note: cut hard, the cap is the promise
            return text[: self.max_output_chars]
        return text[:keep] + f"... [truncated {len(text) - keep} chars]"[: self.max_output_chars - keep]


_CHECKED_SCHEMAS: set[str] = set()


def _check_schema_once(parameters: dict) -> None:
    """``check_schema`` once per distinct schema per process: it costs milliseconds, and loaders
    build the same schemas for every task that lists the same function."""
    try:
        key = json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError):  # not JSON (a schema built in Python): check it every time
        key = None
    if key is not None and key in _CHECKED_SCHEMAS:
        return
    jsonschema.Draft202012Validator.check_schema(parameters)
    if key is not None:
        _CHECKED_SCHEMAS.add(key)


def acknowledge(name: str) -> Callable[..., str]:
    """A tool function that only acknowledges (``"<name>: done"``), for envs that score calls, not their results.

    Example:
        >>> acknowledge("book_flight")(origin="Oslo")
        'book_flight: done'
    """

    def fn(**_: Any) -> str:
        return f"{name}: done"

    return fn


def render_output(value: Any) -> str:
    """Render a tool's return value as text: strings as is, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=False, default=str)
    except (TypeError, ValueError):
        return str(value)


@dataclass
class ToolBox:
    """The tools of one episode, by name; dispatches parsed calls.

    Example:
        >>> echo = Tool("echo", "Echo text.", {"type": "object", "properties": {"text": {"type": "string"}}}, lambda text="": text)
        >>> box = ToolBox([echo])
        >>> box.call("echo", {"text": "hi"}).content
        'hi'
        >>> box.call("nope", {}).content
        "error: unknown tool 'nope'; available tools: echo"
    """

    tools: list[Tool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_name = {t.name: t for t in self.tools}
        if len(self.by_name) != len(self.tools):
            raise ValueError(f"duplicate tool names: {[t.name for t in self.tools]}")

    def schemas(self) -> list[dict]:
        return [t.to_openai() for t in self.tools]

    def call(self, name: str, arguments: Any) -> ToolResult:
        tool = self.by_name.get(name)
        if tool is None:
            shown = name if len(name) <= 80 else name[:80] + "..."
            return ToolResult(
                False, f"error: unknown tool '{shown}'; available tools: {', '.join(self.by_name) or '(none)'}",
                "unknown_tool",
            )
        return tool.call(arguments)
