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
to the model, penalised or masked. Numbers must be finite: ``NaN``, ``Infinity`` and numbers that
overflow a float (``1e309``) are parse errors in every format.

Parsing is linear in the length of the text, whatever the model wrote: fences and the shape of a
Python call are recognised by plain string scanning (no backtracking regex), a call longer than
:data:`MAX_CALL_CHARS` is refused before it is decoded, and reading stops after :data:`MAX_CALLS`
calls (the rest are only counted, for the one error that reports them).
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
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
    return _PARSERS[fmt](text)  # each parser reads at most MAX_CALLS calls and reports the rest as one error


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
            arguments = _json_loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:  # ValueError also covers ints over Python's digit limit
            return ParseError(f'"arguments" is a string that is not valid JSON: {exc}', span)
    if not isinstance(arguments, dict):
        return ParseError(f'"arguments" must be a JSON object, got {type(arguments).__name__}', span)
    return ParsedCall(name, arguments, span)


def _too_many(extra: int, span: tuple[int, int]) -> ParseError:
    """The one error that stands for every call attempt after the first :data:`MAX_CALLS`."""
    return ParseError(f"too many tool calls in one turn: {extra} over the limit of {MAX_CALLS} ignored", span)


def _no_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; letting them through would put invalid JSON into trajectories.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    # 1e309 is valid JSON syntax but decodes to inf: as invalid downstream as a bare Infinity.
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 40 else literal[:20] + "..." + literal[-10:]
        raise ValueError(f"number {shown} is out of range (it overflows to {value}); numbers must be finite")
    return value


def _json_loads(payload: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers overflowing a float (ValueError)."""
    return json.loads(payload, parse_constant=_no_constant, parse_float=_finite_float)


def _loads(payload: str) -> Any:
    if len(payload) > MAX_CALL_CHARS:
        raise ValueError(f"tool call too long ({len(payload)} chars, limit {MAX_CALL_CHARS})")
    try:
        return _json_loads(payload)
    except RecursionError:
        raise ValueError("tool call nested too deeply") from None


_FENCE_MARK = "```"
_FENCE_TAGS = ("json", "python", "py")  # tried in this order ("python" before its prefix "py")


def _fence_body(stripped: str) -> tuple[int, int] | None:
    r"""``(start, end)`` of the code inside a Markdown fence that makes up all of ``stripped``, else None.

    ``stripped`` has no surrounding whitespace. The opening fence may carry a json/python/py tag; the
    whitespace after it, and one newline before the closing fence, are not part of the code. Plain
    string scanning, linear in the length (the regex it replaces, ``^```(?:json|python|py)?\s*\n?(.*?)\n?```$``,
    gives the same code span but backtracks quadratically on an opening fence that is never closed).

    Example:
        >>> text = "```json\n{}\n```"
        >>> start, end = _fence_body(text)
        >>> text[start:end]
        '{}'
        >>> _fence_body("```" + " " * 5) is None
        True
    """
    if len(stripped) < 2 * len(_FENCE_MARK) or not (stripped.startswith(_FENCE_MARK) and stripped.endswith(_FENCE_MARK)):
        return None
    start, end = len(_FENCE_MARK), len(stripped) - len(_FENCE_MARK)
    for tag in _FENCE_TAGS:
        if stripped.startswith(tag, start):  # a tag is letters, so it never runs into the closing backticks
            start += len(tag)
            break
    inner = stripped[start:end]
    start += len(inner) - len(inner.lstrip())  # str.isspace is exactly regex \s
    if start < end and stripped[end - 1] == "\n":
        end -= 1
    return start, end


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
        if len(results) == MAX_CALLS:
            # Every opening tag from here on starts one attempt (tags cannot overlap): count them unread.
            results.append(_too_many(text.count(_OPEN, start), (start, _last_block_end(text))))
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


def _last_block_end(text: str) -> int:
    """Where the attempt opened by the last ``<tool_call>`` ends: after its closing tag, else at the end."""
    body_start = text.rfind(_OPEN) + len(_OPEN)
    end = text.find(_CLOSE, body_start)
    return end + len(_CLOSE) if end >= 0 else len(text)


# ---- bare JSON ---------------------------------------------------------------------------------

_JSON_BLANKS = " \t\n\r"  # the whitespace JSON allows between tokens
_JSON_SEPARATORS = _JSON_BLANKS + ","


def _parse_json(text: str) -> list[ParsedCall | ParseError]:
    stripped = text.strip()
    offset = len(text) - len(text.lstrip())
    fence = _fence_body(stripped)
    if fence:
        offset += fence[0]
        stripped = stripped[fence[0] : fence[1]]
    if not stripped or stripped[0] not in "[{":
        return []
    span = (offset, offset + len(stripped))
    try:
        obj = _loads(stripped)
    except (json.JSONDecodeError, ValueError) as exc:
        return [ParseError(f"invalid JSON tool call: {exc}", span)]
    if not isinstance(obj, list):
        return [_call_from_object(obj, span)]
    spans = _element_spans(stripped, offset, limit=MAX_CALLS + 1)
    results = [_call_from_object(o, s) for o, s in zip(obj[:MAX_CALLS], spans)]
    if len(obj) > MAX_CALLS:
        # The array is valid JSON: its last element ends at the last non-blank before the closing "]".
        last_end = offset + len(stripped.rstrip(_JSON_BLANKS)[:-1].rstrip(_JSON_BLANKS))
        results.append(_too_many(len(obj) - MAX_CALLS, (spans[MAX_CALLS][0], last_end)))
    return results


def _element_spans(array_text: str, offset: int, limit: int) -> list[tuple[int, int]]:
    """Spans of the first ``limit`` elements of a JSON array already known to be valid, so each call points at itself."""
    decoder, spans = json.JSONDecoder(), []
    pos = 1  # after "["
    while len(spans) < limit:
        while pos < len(array_text) and array_text[pos] in _JSON_SEPARATORS:
            pos += 1
        if pos >= len(array_text) or array_text[pos] == "]":
            break
        _, end = decoder.raw_decode(array_text, pos)
        spans.append((offset + pos, offset + end))
        pos = end
    return spans


# ---- python call syntax ------------------------------------------------------------------------

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


_MODEL_TEXT = "<model text>"  # the file name of parse_source's input, which its warnings filter matches


def parse_source(text: str, mode: str) -> ast.AST:
    """``ast.parse``, with a ``SyntaxError`` where Python would only print a ``SyntaxWarning`` on stderr
    (``2and 3``, ``f(x=1if y)``): in model-written text that is a typo to report back to the model.

    Example:
        >>> parse_source("2and 3", "eval")
        Traceback (most recent call last):
        SyntaxError: invalid decimal literal
    """
    # A filter for this file name only, set (not saved and restored: tools run in threads) on every
    # call, since test runners and users reset the filters; with it the compiler raises the error itself.
    warnings.filterwarnings("error", category=SyntaxWarning, module=re.escape(_MODEL_TEXT) + r"\Z")
    return ast.parse(text, filename=_MODEL_TEXT, mode=mode)


def _looks_like_call(text: str) -> bool:
    r"""Whether ``text`` starts like a call or a list of calls: ``[``? blanks, a dotted name, blanks, ``(``.

    Plain string scanning, linear (the same test as the regex ``^\[?\s*[A-Za-z_][\w.]*\s*\(``).

    Example:
        >>> _looks_like_call("[ math.area (r=1)]"), _looks_like_call("x = f(a=1)"), _looks_like_call("So f(2) = 4.")
        (True, False, False)
    """
    rest = (text[1:] if text.startswith("[") else text).lstrip()
    if not rest or rest[0] not in _NAME_START:
        return False
    paren = rest.find("(")
    if paren < 0:
        return False
    # Between the first letter and "(": word characters and dots, then blanks only (\w is str.isalnum or "_").
    name_tail = rest[1:paren].rstrip().replace(".", "").replace("_", "")
    return not name_tail or name_tail.isalnum()


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
    offset = len(text) - len(text.lstrip())
    fence = _fence_body(stripped)
    if fence:
        inner = stripped[fence[0] : fence[1]]
        stripped = inner.strip()
        offset += fence[0] + len(inner) - len(inner.lstrip())
    if not _looks_like_call(stripped):
        return []
    span = (offset, offset + len(stripped))
    if len(stripped) > MAX_CALL_CHARS:
        return [ParseError(f"tool call too long ({len(stripped)} chars, limit {MAX_CALL_CHARS})", span)]
    try:
        tree = parse_source(stripped, "eval").body
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

    def span_of(node: ast.AST) -> tuple[int, int]:
        if getattr(node, "end_lineno", None) is None:
            return span
        return (char_pos(node.lineno, node.col_offset), char_pos(node.end_lineno, node.end_col_offset))

    for node in nodes[:MAX_CALLS]:
        node_span = span_of(node)
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
            try:
                arguments[kw.arg] = _to_json_like(value)
            except _NotFinite as exc:
                error = f"{name}: argument {kw.arg!r} {exc}"
                break
        results.append(ParseError(error, node_span) if error else ParsedCall(name, arguments, node_span))
    if len(nodes) > MAX_CALLS:  # elements come in source order: the rest ends where the last one does
        results.append(_too_many(len(nodes) - MAX_CALLS, (span_of(nodes[MAX_CALLS])[0], span_of(nodes[-1])[1])))
    return results


class _NotFinite(ValueError):
    pass


def _to_json_like(value: Any) -> Any:
    """Tuples and sets become lists, so arguments validate against JSON Schema like JSON ones do."""
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_to_json_like(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json_like(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # 1e309 is a literal for inf; inf is not JSON
        raise _NotFinite(f"is not a finite number (a literal that overflows a float gives {value})")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)  # bytes, complex, Ellipsis: kept visible but never JSON-invalid


_PARSERS = {"hermes": _parse_hermes, "json": _parse_json, "python": _parse_python}
