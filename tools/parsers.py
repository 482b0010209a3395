"""Tool-call parsers: model text in, one result per call out (a call, or a parse error with its span).

Three formats:

- ``hermes`` (default, Hermes/Qwen): ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>``,
  any number of blocks anywhere in the turn.
- ``json``: the whole turn is a JSON object ``{"name": ..., "arguments": ...}`` or a list of them
  (a Markdown code fence around it is tolerated).
- ``python``: BFCL's syntax, ``f(a=1, b="x")`` or ``[f(a=1), g.h(x=[1, 2])]``, parsed with ``ast``
  and read with ``ast.literal_eval``: never evaluated.

A turn with no call attempt parses to ``[]`` (a final answer); a call attempt that cannot be read
gives a :class:`ParseError` whose ``span`` points at the offending characters, so it can be fed back
to the model, penalised or masked.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any

FORMATS = ("hermes", "json", "python")
MAX_CALL_CHARS = 20_000  # a single call longer than this is refused unread (cheap on huge inputs)
MAX_CALLS = 64  # call attempts read from one turn; the rest become one error (bounds tool work and obs size)

# How to write a call, one sentence per format: the envs end their system prompts with it.
FORMAT_HINTS = {
    "hermes": 'Write each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.',
    "json": 'Write the call as JSON {"name": ..., "arguments": {...}}, or a JSON list of them for several calls.',
    "python": "Write the calls as a Python list: [func(arg=value), ...].",
}


@dataclass(frozen=True)
class ParsedCall:
    """A tool call read from the model's text; ``span`` is ``(start, end)`` in that text."""

    name: str
    arguments: dict
    span: tuple[int, int]


@dataclass(frozen=True)
class ParseError:
    """A call attempt that could not be read; ``span`` is ``(start, end)`` of the attempt."""

    message: str
    span: tuple[int, int]


def format_hint(fmt: str) -> str:
    """One sentence telling the model how to write calls in format ``fmt`` (from :data:`FORMAT_HINTS`).

    Example:
        >>> format_hint("python")
        'Write the calls as a Python list: [func(arg=value), ...].'
    """
    _check_format(fmt)
    return FORMAT_HINTS[fmt]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown tool-call format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def parse_tool_calls(text: str, fmt: str = "hermes") -> list[ParsedCall | ParseError]:
    """Parse every tool call in ``text`` written in format ``fmt``.

    Example:
        >>> parse_tool_calls('<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>')
        [ParsedCall(name='add', arguments={'a': 1}, span=(0, 61))]
        >>> parse_tool_calls('The answer is \\\\boxed{4}.')
        []
        >>> parse_tool_calls('<tool_call>{"name": "add", </tool_call>')[0].message[:12]
        'invalid JSON'
        >>> parse_tool_calls('add(a=1, b="x")', fmt="python")
        [ParsedCall(name='add', arguments={'a': 1, 'b': 'x'}, span=(0, 15))]
    """
    _check_format(fmt)
    results = _PARSERS[fmt](text)
    if len(results) > MAX_CALLS:
        rest = (results[MAX_CALLS].span[0], max(r.span[1] for r in results[MAX_CALLS:]))
        extra = len(results) - MAX_CALLS
        results = results[:MAX_CALLS] + [ParseError(f"too many tool calls in one turn: {extra} over the limit of {MAX_CALLS} ignored", rest)]
    return results


def format_tool_call(name: str, arguments: dict, fmt: str = "hermes") -> str:
    """Write one call in format ``fmt`` (as a model would, and as the oracle does).

    Example:
        >>> print(format_tool_call("add", {"a": 1, "b": 2}))
        <tool_call>
        {"name": "add", "arguments": {"a": 1, "b": 2}}
        </tool_call>
        >>> format_tool_call("add", {"a": 1, "b": "x"}, fmt="python")
        "add(a=1, b='x')"
    """
    _check_format(fmt)
    if fmt == "hermes":
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"
    if fmt == "json":
        return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in arguments.items()) + ")"


def format_tool_calls(calls: list[tuple[str, dict]], fmt: str = "hermes") -> str:
    """Write several calls as one assistant turn (``[f(...), g(...)]`` in python, a list in json)."""
    if fmt == "hermes":
        return "\n".join(format_tool_call(n, a, fmt) for n, a in calls)
    if fmt == "json":
        if len(calls) == 1:
            return format_tool_call(*calls[0], fmt="json")
        return json.dumps([{"name": n, "arguments": a} for n, a in calls], ensure_ascii=False)
    return "[" + ", ".join(format_tool_call(n, a, fmt) for n, a in calls) + "]"


# ---- shared ------------------------------------------------------------------------------------


def _call_from_object(obj: Any, span: tuple[int, int]) -> ParsedCall | ParseError:
    """Validate a decoded ``{"name": ..., "arguments": ...}`` object."""
    if not isinstance(obj, dict):
        return ParseError(f"a tool call must be a JSON object, got {type(obj).__name__}", span)
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return ParseError('a tool call needs a "name" string', span)
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI-style models often send arguments as a JSON string
        try:
            arguments = json.loads(arguments, parse_constant=_no_constant) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:  # ValueError also covers ints over Python's digit limit
            return ParseError(f'"arguments" is a string that is not valid JSON: {exc}', span)
    if not isinstance(arguments, dict):
        return ParseError(f'"arguments" must be a JSON object, got {type(arguments).__name__}', span)
    return ParsedCall(name, arguments, span)


def _no_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would put invalid JSON into trajectories.
    raise ValueError(f"{name} is not valid JSON")


def _loads(payload: str) -> Any:
    if len(payload) > MAX_CALL_CHARS:
        raise ValueError(f"tool call too long ({len(payload)} chars, limit {MAX_CALL_CHARS})")
    try:
        return json.loads(payload, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("tool call nested too deeply") from None


# ---- hermes ------------------------------------------------------------------------------------

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


def _parse_hermes(text: str) -> list[ParsedCall | ParseError]:
    results: list[ParsedCall | ParseError] = []
    pos = 0
    end = -2  # cached position of the next closing tag (-1: none left), so unclosed tags stay linear
    while True:
        start = text.find(_OPEN, pos)
        if start < 0:
            break
        body_start = start + len(_OPEN)
        if end == -2 or 0 <= end < body_start:
            end = text.find(_CLOSE, body_start)
        nxt = text.find(_OPEN, body_start)
        if end < 0 or (0 <= nxt < end):
            stop = nxt if nxt >= 0 else len(text)
            results.append(ParseError("unclosed <tool_call> (missing </tool_call>)", (start, stop)))
            pos = stop
            continue
        span = (start, end + len(_CLOSE))
        try:
            obj = _loads(text[body_start:end].strip())
        except (json.JSONDecodeError, ValueError) as exc:
            results.append(ParseError(f"invalid JSON in <tool_call>: {exc}", span))
        else:
            results.append(_call_from_object(obj, span))
        pos = span[1]
    # A stray closing tag with no opening one is an attempt too; report it so the model learns.
    if not results and _CLOSE in text:
        i = text.find(_CLOSE)
        results.append(ParseError("</tool_call> without <tool_call>", (i, i + len(_CLOSE))))
    return results


# ---- bare JSON ---------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?:json|python|py)?\s*\n?(.*?)\n?```$", re.DOTALL)


def _parse_json(text: str) -> list[ParsedCall | ParseError]:
    stripped = text.strip()
    offset = text.find(stripped) if stripped else 0
    fence = _FENCE.match(stripped)
    if fence:
        offset += fence.start(1)
        stripped = fence.group(1)
    if not stripped or stripped[0] not in "[{":
        return []
    span = (offset, offset + len(stripped))
    try:
        obj = _loads(stripped)
    except (json.JSONDecodeError, ValueError) as exc:
        return [ParseError(f"invalid JSON tool call: {exc}", span)]
    if isinstance(obj, list):
        return [_call_from_object(o, s) for o, s in zip(obj, _element_spans(stripped, offset))]
    return [_call_from_object(obj, span)]


def _element_spans(array_text: str, offset: int) -> list[tuple[int, int]]:
    """Spans of the elements of a JSON array already known to be valid, so each call points at itself."""
    decoder, spans = json.JSONDecoder(), []
    pos = 1  # after "["
    while True:
        while pos < len(array_text) and array_text[pos] in " \t\n\r,":
            pos += 1
        if pos >= len(array_text) or array_text[pos] == "]":
            return spans
        _, end = decoder.raw_decode(array_text, pos)
        spans.append((offset + pos, offset + end))
        pos = end


# ---- python call syntax ------------------------------------------------------------------------

_LOOKS_LIKE_CALL = re.compile(r"^\[?\s*[A-Za-z_][\w.]*\s*\(")


def _dotted_name(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _parse_python(text: str) -> list[ParsedCall | ParseError]:
    stripped = text.strip()
    fence = _FENCE.match(stripped)
    if fence:
        stripped = fence.group(1).strip()
    if not _LOOKS_LIKE_CALL.match(stripped):
        return []
    offset = max(text.find(stripped), 0)
    span = (offset, offset + len(stripped))
    if len(stripped) > MAX_CALL_CHARS:
        return [ParseError(f"tool call too long ({len(stripped)} chars, limit {MAX_CALL_CHARS})", span)]
    try:
        tree = ast.parse(stripped, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return [ParseError(f"invalid Python call syntax: {type(exc).__name__}: {exc}", span)]
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    results: list[ParsedCall | ParseError] = []
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", stripped)]  # ast's idea of a line

    def char_pos(lineno: int, col: int) -> int:
        # ast columns count UTF-8 bytes; spans count characters
        start = line_starts[min(lineno, len(line_starts)) - 1]
        line = stripped[start : start + col]  # a byte offset is never below the char offset
        return offset + start + len(line.encode("utf-8", "surrogatepass")[:col].decode("utf-8", "ignore"))

    for node in nodes:
        node_span = span
        if getattr(node, "end_lineno", None) is not None:
            node_span = (char_pos(node.lineno, node.col_offset), char_pos(node.end_lineno, node.end_col_offset))
        if not isinstance(node, ast.Call):
            results.append(ParseError("expected a function call like f(a=1)", node_span))
            continue
        name = _dotted_name(node.func)
        if name is None:
            results.append(ParseError("the called function must be a (dotted) name", node_span))
            continue
        if node.args:
            results.append(ParseError(f"{name}: pass arguments by keyword (f(a=1)), not by position", node_span))
            continue
        arguments: dict[str, Any] = {}
        error = None
        for kw in node.keywords:
            if kw.arg is None:
                error = f"{name}: **kwargs is not allowed"
                break
            if kw.arg in arguments:  # ast accepts f(a=1, a=2); Python itself would refuse it
                error = f"{name}: argument {kw.arg!r} given twice"
                break
            try:
                value = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                error = f"{name}: argument {kw.arg!r} is not a literal value"
                break
            arguments[kw.arg] = _to_json_like(value)
        results.append(ParseError(error, node_span) if error else ParsedCall(name, arguments, node_span))
    return results


def _to_json_like(value: Any) -> Any:
    """Tuples and sets become lists, so arguments validate against JSON Schema like JSON ones do."""
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_to_json_like(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json_like(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # inf/nan are not JSON
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)  # bytes, complex, Ellipsis: kept visible but never JSON-invalid


_PARSERS = {"hermes": _parse_hermes, "json": _parse_json, "python": _parse_python}
