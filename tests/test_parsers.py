"""Tool-call parsers: hermes, bare JSON, Python call syntax; spans, errors, and safety."""

import json
import os
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsd_agents.tools import FORMATS, ParsedCall, ParseError, format_tool_call, format_tool_calls, parse_tool_calls
from pbsd_agents.tools import parsers
from pbsd_agents.tools.parsers import MAX_CALL_CHARS, MAX_CALLS


def calls(results):
    return [(r.name, r.arguments) for r in results if isinstance(r, ParsedCall)]


def errors(results):
    return [r for r in results if isinstance(r, ParseError)]


def covered(text, result):
    return text[result.span[0] : result.span[1]]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="valid formats: hermes, json, python"):
        parse_tool_calls("x", fmt="xml")
    with pytest.raises(ValueError):
        format_tool_call("f", {}, fmt="xml")


# ---- hermes --------------------------------------------------------------------------------------


def test_hermes_single_call_and_span():
    block = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    text = "Let me add. " + block + " Then answer."
    [r] = parse_tool_calls(text)
    assert (r.name, r.arguments) == ("add", {"a": 1, "b": 2})
    assert covered(text, r) == block


def test_hermes_multiple_blocks_spans_point_at_each_block():
    blocks = [format_tool_call("a", {"x": 1}), '<tool_call>{"name": "b"}</tool_call>', format_tool_call("c", {"y": "é🙂"})]
    text = "start " + blocks[0] + "\nmiddle\n" + blocks[1] + blocks[2] + " end"
    results = parse_tool_calls(text)
    assert calls(results) == [("a", {"x": 1}), ("b", {}), ("c", {"y": "é🙂"})]
    assert [covered(text, r) for r in results] == blocks


def test_hermes_no_call_is_a_final_answer():
    assert parse_tool_calls("The answer is \\boxed{4}.") == []
    assert parse_tool_calls("") == []
    assert parse_tool_calls("talking about tool_call without tags") == []


def test_hermes_unclosed_tag():
    text = 'ok <tool_call>{"name": "a", "arguments": {}}'
    [r] = parse_tool_calls(text)
    assert isinstance(r, ParseError) and "unclosed" in r.message
    assert r.span == (3, len(text))


def test_hermes_unclosed_tag_before_a_good_block():
    good = '<tool_call>{"name": "b"}</tool_call>'
    text = '<tool_call>{"name": "a"' + good
    bad, ok = parse_tool_calls(text)
    assert isinstance(bad, ParseError) and covered(text, bad) == '<tool_call>{"name": "a"'
    assert isinstance(ok, ParsedCall) and ok.name == "b" and covered(text, ok) == good


def test_hermes_stray_closing_tag_is_reported():
    [r] = parse_tool_calls("done </tool_call>")
    assert isinstance(r, ParseError) and covered("done </tool_call>", r) == "</tool_call>"


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"name": "add", ', "invalid JSON"),
        ("not json at all", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"arguments": {}}', '"name" string'),
        ('{"name": 3}', '"name" string'),
        ('{"name": ""}', '"name" string'),
        ('{"name": "f", "arguments": [1]}', '"arguments" must be a JSON object'),
        ('{"name": "f", "arguments": null}', '"arguments" must be a JSON object'),
        ('{"name": "f", "arguments": "{oops"}', "not valid JSON"),
        ('{"name": "f", "arguments": "[1]"}', '"arguments" must be a JSON object'),
        ('{"name": "f", "arguments": "{\\"a\\": 1' + "0" * 5000 + '}"}', "not valid JSON"),
        ('{"name": "f", "arguments": {"a": 1' + "0" * 5000 + "}}", "invalid JSON"),
        ('{"a": ' * 3000 + "1" + "}" * 3000, "invalid JSON"),
    ],
)
def test_hermes_bad_bodies_are_errors_with_the_block_span(body, message):
    text = "x <tool_call>" + body + "</tool_call> y"
    [r] = parse_tool_calls(text)
    assert isinstance(r, ParseError) and message in r.message
    assert covered(text, r) == "<tool_call>" + body + "</tool_call>"


def test_hermes_arguments_as_json_string_and_parameters_alias():
    text = '<tool_call>{"name": "f", "arguments": "{\\"a\\": [1, 2]}"}</tool_call>'
    assert calls(parse_tool_calls(text)) == [("f", {"a": [1, 2]})]
    assert calls(parse_tool_calls('<tool_call>{"name": "f", "arguments": ""}</tool_call>')) == [("f", {})]
    assert calls(parse_tool_calls('<tool_call>{"name": "f", "parameters": {"b": 1}}</tool_call>')) == [("f", {"b": 1})]


def test_hermes_too_long_call_is_refused_unread():
    text = format_tool_call("f", {"x": "a" * MAX_CALL_CHARS})
    [r] = parse_tool_calls(text)
    assert isinstance(r, ParseError) and "too long" in r.message and r.span == (0, len(text))


def test_too_many_calls_are_cut_to_one_error():
    block = format_tool_call("f", {})
    text = block * (MAX_CALLS + 10)
    results = parse_tool_calls(text)
    assert len(results) == MAX_CALLS + 1
    assert all(isinstance(r, ParsedCall) for r in results[:MAX_CALLS])
    assert "10 over the limit" in results[-1].message
    assert results[-1].span == (MAX_CALLS * len(block), len(text))


def test_many_unclosed_tags_parse_in_linear_time():
    import time

    t0 = time.perf_counter()
    results = parse_tool_calls("<tool_call>" * 90_000)
    assert time.perf_counter() - t0 < 2.0
    assert len(results) == MAX_CALLS + 1


# ---- bare JSON -----------------------------------------------------------------------------------


def test_json_object():
    text = '  {"name": "f", "arguments": {"a": 1}}\n'
    [r] = parse_tool_calls(text, "json")
    assert (r.name, r.arguments) == ("f", {"a": 1}) and covered(text, r) == text.strip()


def test_json_list_spans_point_at_each_call():
    text = '[{"name": "f", "arguments": {"a": [1, 2]}},\n {"name": "g"} ]'
    results = parse_tool_calls(text, "json")
    assert calls(results) == [("f", {"a": [1, 2]}), ("g", {})]
    assert [covered(text, r) for r in results] == ['{"name": "f", "arguments": {"a": [1, 2]}}', '{"name": "g"}']


def test_json_list_with_bad_elements():
    text = '[{"name": "f"}, 5, {"arguments": {}}]'
    ok, five, noname = parse_tool_calls(text, "json")
    assert isinstance(ok, ParsedCall)
    assert isinstance(five, ParseError) and covered(text, five) == "5"
    assert isinstance(noname, ParseError) and covered(text, noname) == '{"arguments": {}}'


@pytest.mark.parametrize("fence", ["```json\n{}\n```", "```\n{}\n```", "```json {}```"])
def test_json_fenced(fence):
    text = fence.replace("{}", '{"name": "f", "arguments": {"a": 1}}')
    [r] = parse_tool_calls(text, "json")
    assert (r.name, r.arguments) == ("f", {"a": 1})
    assert covered(text, r).strip() == '{"name": "f", "arguments": {"a": 1}}'


@pytest.mark.parametrize("text", ["The answer is 4.", "", "   ", "[]", "42"])
def test_json_no_call(text):
    assert parse_tool_calls(text, "json") == []


def test_json_invalid():
    text = ' {"name": "f", '
    [r] = parse_tool_calls(text, "json")
    assert isinstance(r, ParseError) and "invalid JSON" in r.message and covered(text, r) == text.strip()


# ---- python call syntax --------------------------------------------------------------------------


def test_python_simple_and_dotted():
    assert calls(parse_tool_calls('add(a=1, b="x")', "python")) == [("add", {"a": 1, "b": "x"})]
    text = "math.geometry.area(radius=2.5, unit='cm')"
    [r] = parse_tool_calls(text, "python")
    assert (r.name, r.arguments, r.span) == ("math.geometry.area", {"radius": 2.5, "unit": "cm"}, (0, len(text)))


def test_python_list_of_calls_spans():
    text = '[f(a=1), g.h(x=[1, 2], y={"k": None}),  k()]'
    results = parse_tool_calls(text, "python")
    assert calls(results) == [("f", {"a": 1}), ("g.h", {"x": [1, 2], "y": {"k": None}}), ("k", {})]
    assert [covered(text, r) for r in results] == ["f(a=1)", 'g.h(x=[1, 2], y={"k": None})', "k()"]


def test_python_spans_count_characters_not_bytes():
    text = 'f(a="é🙂"), g(b=1)'
    first, second = parse_tool_calls(text, "python")
    assert covered(text, first) == 'f(a="é🙂")' and covered(text, second) == "g(b=1)"


def test_python_multiline_spans():
    text = "[f(a=1),\n  g(b='ü',\n    c=2)]"
    first, second = parse_tool_calls(text, "python")
    assert covered(text, first) == "f(a=1)" and covered(text, second) == "g(b='ü',\n    c=2)"


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n", "\x0c", "\\\n"])
def test_python_spans_with_any_line_break(newline):
    text = f"[f(a='é🙂'),{newline}  g(c='ü', d=1)]"
    first, second = parse_tool_calls(text, "python")
    assert covered(text, first) == "f(a='é🙂')" and covered(text, second) == "g(c='ü', d=1)"


@pytest.mark.parametrize("fence", ["```python\n{}\n```", "```py\n{}\n```", "```\n{}\n```"])
def test_python_fenced(fence):
    text = "  " + fence.format("f(a=1)")
    [r] = parse_tool_calls(text, "python")
    assert (r.name, r.arguments) == ("f", {"a": 1}) and covered(text, r) == "f(a=1)"


def test_python_literals_become_json_like():
    [r] = parse_tool_calls("f(t=(1, 2), s={3}, d={1: 'x'}, n=-4, b=True, z=None, by=b'q', c=1j)", "python")
    assert r.arguments == {"t": [1, 2], "s": [3], "d": {"1": "x"}, "n": -4, "b": True, "z": None, "by": "b'q'", "c": "1j"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("f(1, 2)", "by keyword"),
        ("f(a, b=1)", "by keyword"),
        ("f(*args)", "by keyword"),
        ("f(**{'a': 1})", "**kwargs"),
        ("f(a=x)", "not a literal"),
        ("f(a=1 + 2)", "not a literal"),
        ("f(a=[1, 2][0])", "not a literal"),
        ("f(a=lambda: 0)", "not a literal"),
        ("f(a=open('/etc/passwd').read())", "not a literal"),
        ("f()()", "(dotted) name"),
        ("f(a=1)(b=2)", "(dotted) name"),
        ("f(a=1, a=2)", "given twice"),
        ("f(a=1", "invalid Python"),
        ("f(a=" + "9" * 5000 + ")", "invalid Python"),
        ("f(a=" + "[" * 1000 + "]" * 1000 + ")", "invalid Python"),
        ("f(a=2and 3)", "invalid decimal literal"),  # Python would only warn, on stderr
    ],
)
def test_python_refusals(text, message, recwarn):
    [r] = parse_tool_calls(text, "python")
    assert isinstance(r, ParseError) and message in r.message, r
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]


def test_python_non_call_elements_in_a_list():
    text = "[f(a=1), 3]"
    ok, bad = parse_tool_calls(text, "python")
    assert isinstance(ok, ParsedCall) and isinstance(bad, ParseError) and covered(text, bad) == "3"


@pytest.mark.parametrize("text", ["The answer is 4.", "", "4", "Hello (world)", "[]", "x = f(a=1)"])
def test_python_no_call(text):
    results = parse_tool_calls(text, "python")
    assert results == [] or all(isinstance(r, ParseError) for r in results)


def test_python_too_long():
    text = "f(a='" + "x" * MAX_CALL_CHARS + "')"
    [r] = parse_tool_calls(text, "python")
    assert isinstance(r, ParseError) and "too long" in r.message


def test_python_is_never_evaluated(tmp_path, monkeypatch):
    """Code inside a call is data: nothing runs, even code meant to create a file or import a module."""
    marker = tmp_path / "pwned"
    ran = []
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd))
    for text in [
        f"f(a=__import__('os').system('touch {marker}'))",
        f"__import__('os').system('touch {marker}')",
        f"f(a=open('{marker}', 'w').write('x'))",
        f"[f(a=1), exec(code=\"open('{marker}', 'w')\")]",
        f"os.system(command='touch {marker}')",
        f"f(a=(lambda: open('{marker}', 'w'))())",
    ]:
        results = parse_tool_calls(text, "python")
        assert results and all(isinstance(r, (ParsedCall, ParseError)) for r in results)
        if text.startswith("f(a=__import__"):
            [r] = results
            assert isinstance(r, ParseError) and "not a literal" in r.message
    assert not marker.exists() and ran == []
    # A call named like a dangerous function is only a name; running it is up to the ToolBox, which refuses.
    assert calls(parse_tool_calls("os.system(command='ls')", "python")) == [("os.system", {"command": "ls"})]


# ---- writing calls -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in {"None", "True", "False", "lambda", "def", "class", "if", "else", "or", "and", "not", "in",
                        "is", "for", "while", "return", "import", "from", "as", "with", "try", "except", "finally",
                        "raise", "del", "global", "nonlocal", "assert", "pass", "break", "continue", "yield",
                        "async", "await", "elif"}
)
arguments = st.dictionaries(identifiers, json_values, max_size=4)


@settings(max_examples=150, deadline=None)
@given(name=st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,8}){0,2}", fullmatch=True).filter(
    lambda s: not any(p in {"if", "in", "is", "or", "as", "def", "for", "and", "not", "del", "try"} for p in s.split("."))),
    args=arguments, fmt=st.sampled_from(FORMATS))
def test_format_then_parse_round_trips(name, args, fmt):
    text = format_tool_call(name, args, fmt)
    [r] = parse_tool_calls(text, fmt)
    assert isinstance(r, ParsedCall) and (r.name, r.arguments) == (name, json.loads(json.dumps(args)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_several_calls_round_trips(fmt):
    pairs = [("f", {"a": 1}), ("g", {"b": ["x"]}), ("h", {})]
    text = format_tool_calls(pairs, fmt)
    assert calls(parse_tool_calls(text, fmt)) == pairs
    assert calls(parse_tool_calls(format_tool_calls(pairs[:1], fmt), fmt)) == pairs[:1]


def test_hermes_format_matches_qwen_layout():
    assert format_tool_call("f", {"a": 1}) == '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(identifiers, arguments), min_size=1, max_size=4),
       seps=st.lists(st.sampled_from([", ", ",\n", ",\r\n  ", ",\r", ",\t"]), min_size=4, max_size=4),
       fmt=st.sampled_from(FORMATS))
def test_spans_cover_exactly_each_call(pairs, seps, fmt):
    pieces = [format_tool_call(n, a, fmt) for n, a in pairs]
    if fmt == "hermes":
        text = "I will call. " + "".join(p + s for p, s in zip(pieces, seps)) + "ok"
    elif fmt == "json":
        pieces = [json.dumps({"name": n, "arguments": a}) for n, a in pairs]
        text = "[" + "".join(p + s for p, s in zip(pieces, seps)).rstrip(", \r\n\t") + "]"
    else:
        text = "[" + "".join(p + s for p, s in zip(pieces, seps)).rstrip(", \r\n\t") + "]"
    results = parse_tool_calls(text, fmt)
    assert [covered(text, r) for r in results] == pieces


# ---- properties ----------------------------------------------------------------------------------

FRAGMENTS = ["<tool_call>", "</tool_call>", "{", "}", "[", "]", "(", ")", '"', "'", ":", ",", "=", "```", "```json\n",
             '"name"', '"arguments"', "f", "a.b", "1", "-2.5e3", "null", "NaN", "\n", "\r", "\r\n", "\x0c", " ", "\\", "\ud800", "é", "🙂",
             "__import__('os')", "lambda", "**", "*", "f(a=1)", '{"name": "f", "arguments": {}}']
chunky_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join)


def _check_results(text, fmt):
    results = parse_tool_calls(text, fmt)
    assert isinstance(results, list) and len(results) <= MAX_CALLS + 1
    for r in results:
        assert isinstance(r, (ParsedCall, ParseError))
        start, end = r.span
        assert type(start) is int and type(end) is int and 0 <= start <= end <= len(text), (r, len(text))
        if isinstance(r, ParsedCall):
            assert isinstance(r.name, str) and r.name and isinstance(r.arguments, dict)
        else:
            assert isinstance(r.message, str) and r.message


@settings(max_examples=400, deadline=None)
@given(text=st.text(), fmt=st.sampled_from(FORMATS))
def test_any_text_never_raises_and_spans_stay_inside(text, fmt):
    _check_results(text, fmt)


@settings(max_examples=600, deadline=None)
@given(text=chunky_text, fmt=st.sampled_from(FORMATS))
def test_call_like_text_never_raises_and_spans_stay_inside(text, fmt):
    _check_results(text, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "text",
    ["[" * 1_000_000, "a" * 1_000_000, "<tool_call>" * 5000, "f(" * 50_000, "{" * 19_000, "(" * 10_000,
     "```" * 1000, "[" + "f(a=1), " * 3000 + "]", "\ud800" * 1000],
)
def test_huge_and_deep_inputs(text, fmt):
    _check_results(text, fmt)


# ---- linear time on pathological inputs ------------------------------------------------------------


def _repeat(unit, n):
    return unit * max(1, n // len(unit))


# Each builds a text of about n characters: degenerate model outputs and inputs aimed at each scanning step
# (code fences, Hermes tags, the shape check of a Python call, JSON/ast decoding, span computation).
PATHOLOGICAL = {
    "unclosed fence, spaces": lambda n: "```" + " " * n + "x",
    "unclosed fence, newlines": lambda n: "```" + "\n" * n + "x",
    "unclosed json fence, CRLFs": lambda n: "```json" + "\r\n" * (n // 2) + "x",
    "closed fence, spaces": lambda n: "```" + " " * n + "x```",
    "python fence, spaces after the call": lambda n: "```py\nf(a=1)" + " " * n,
    "backticks": lambda n: "`" * n,
    "fences": lambda n: _repeat("```", n),
    "fences and newlines": lambda n: _repeat("```\n", n),
    "spaces": lambda n: " " * n + "x",
    "newlines": lambda n: "\n" * n + "x",
    "braces": lambda n: "{" * n,
    "brackets": lambda n: "[" * n,
    "parentheses": lambda n: "(" * n,
    "double quotes": lambda n: '"' * n,
    "single quotes": lambda n: "'" * n,
    "backslashes in a string": lambda n: '"' + "\\" * n,
    "<tool_call> openers": lambda n: _repeat("<tool_call>", n),
    "</tool_call> closers": lambda n: _repeat("</tool_call>", n),
    "<tool_call> then spaces": lambda n: "<tool_call>" + " " * n,
    "<tool_call> of braces": lambda n: "<tool_call>" + "{" * n + "</tool_call>",
    "nested brackets": lambda n: "[" * (n // 2) + "]" * (n // 2),
    "nested objects": lambda n: '{"a": ' * (n // 7) + "1" + "}" * (n // 7),
    "nested call argument": lambda n: "f(a=" + "[" * (n // 2) + "]" * (n // 2) + ")",
    "[ then spaces then a name": lambda n: "[" + " " * n + "f",
    "long name, no parenthesis": lambda n: "f" * n + "  x",
    "name, spaces, name, (": lambda n: "f" + " " * n + "x(",
    "dotted name of dots": lambda n: "[a" + "." * n,
    "hermes calls": lambda n: _repeat(format_tool_call("f", {"a": 1}), n),
    "json calls": lambda n: "[" + _repeat('{"name": "f"}, ', n) + '{"name": "f"}]',
    "python calls": lambda n: "[" + _repeat("f(a=1), ", n) + "f(a=1)]",
    "python calls over CRLF lines": lambda n: "[" + _repeat("f(a='é'),\r\n", n) + "f(a=1)]",
    "json numbers": lambda n: '{"name": "f", "arguments": {"a": [' + _repeat("1e5,", n) + "1]}}",
}


def _min_times(texts, fmt, repeats=5, target_s=0.002):
    """Best time per parse of each text (same loop count for all, calibrated on the first; samples interleaved)."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            parse_tool_calls(texts[0], fmt)
        if time.perf_counter() - t0 >= target_s or number >= 1 << 14:
            break
        number *= 2
    best = [float("inf")] * len(texts)
    for _ in range(repeats):
        for i, text in enumerate(texts):
            t0 = time.perf_counter()
            for _ in range(number):
                parse_tool_calls(text, fmt)
            best[i] = min(best[i], (time.perf_counter() - t0) / number)
    return best


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_inputs_parse_in_linear_time(name, fmt):
    small, large = PATHOLOGICAL[name](10_000), PATHOLOGICAL[name](100_000)
    assert 9_000 <= len(small) <= 11_000 and 90_000 <= len(large) <= 110_000
    _check_results(small, fmt)  # nothing raises, spans stay inside
    _check_results(large, fmt)
    # Linear work gives a ratio near 10; the quadratic fence regex this replaces gave about 100. A busy machine
    # can slow every sample of one size, so a high ratio is measured again before it counts.
    for _ in range(3):
        t_small, t_large = _min_times([small, large], fmt)
        if t_large / t_small < 30:
            break
    assert t_large / t_small < 30, (name, fmt, t_small, t_large)


@pytest.mark.parametrize("fmt", ["json", "python"])
def test_unclosed_fence_is_no_call(fmt):
    text = "```json" + " " * 100_000 + "x"
    assert parse_tool_calls(text, fmt) == []


def test_hermes_stops_decoding_at_the_call_cap(monkeypatch):
    block = format_tool_call("f", {"a": 1})
    decoded = []
    loads = parsers._loads
    monkeypatch.setattr(parsers, "_loads", lambda payload: decoded.append(1) or loads(payload))
    text = block * 100_000
    results = parse_tool_calls(text)
    assert len(decoded) == MAX_CALLS
    assert all(isinstance(r, ParsedCall) for r in results[:MAX_CALLS]) and len(results) == MAX_CALLS + 1
    assert f"{100_000 - MAX_CALLS} over the limit" in results[-1].message
    assert results[-1].span == (MAX_CALLS * len(block), len(text))
    monkeypatch.undo()
    # so 100 k calls take about as long as 65 (the old parser was ~2000x slower on them)
    for _ in range(3):
        t_few, t_many = _min_times([block * (MAX_CALLS + 1), text], "hermes")
        if t_many / t_few < 60:
            break
    assert t_many / t_few < 60, (t_few, t_many)


def test_hermes_call_cap_counts_unclosed_and_bad_blocks():
    good, bad, unclosed = '<tool_call>{"name": "f"}</tool_call>', "<tool_call>{oops</tool_call>", '<tool_call>{"name": "g"'
    text = good * MAX_CALLS + "x " + bad + unclosed + good + unclosed
    results = parse_tool_calls(text)
    assert len(results) == MAX_CALLS + 1 and "4 over the limit" in results[-1].message
    assert results[-1].span == (MAX_CALLS * len(good) + 2, len(text))
    text = good * MAX_CALLS + bad + unclosed + good + " tail"
    assert parse_tool_calls(text)[-1].span == (MAX_CALLS * len(good), len(text) - len(" tail"))


@pytest.mark.parametrize("fmt", ["json", "python"])
@pytest.mark.parametrize("layout", ["plain", "fenced"])
def test_json_and_python_lists_stop_at_the_call_cap(fmt, layout, monkeypatch):
    pieces = [format_tool_call("f", {"a": i}, fmt) if i % 7 != 3 else "5" for i in range(MAX_CALLS + 10)]
    head = "  ```" + ("json" if fmt == "json" else "python") + "\n[" if layout == "fenced" else " \n["
    text = head + ",\n ".join(pieces) + " \n]" + ("\n```" if layout == "fenced" else "")
    starts, pos = [], len(head)
    for piece in pieces:
        starts.append(pos)
        pos += len(piece) + len(",\n ")
    seen = []
    if fmt == "json":
        call_from_object = parsers._call_from_object
        monkeypatch.setattr(parsers, "_call_from_object", lambda o, s: seen.append(1) or call_from_object(o, s))
    else:
        literal_eval = parsers.ast.literal_eval
        monkeypatch.setattr(parsers.ast, "literal_eval", lambda node: seen.append(1) or literal_eval(node))
    results = parse_tool_calls(text, fmt)
    assert len(results) == MAX_CALLS + 1 and "10 over the limit" in results[-1].message
    assert [covered(text, r) for r in results[:MAX_CALLS]] == pieces[:MAX_CALLS]
    assert results[-1].span == (starts[MAX_CALLS], starts[-1] + len(pieces[-1]))
    # the rest is never read: json validates the first MAX_CALLS elements, python reads the calls among them
    assert len(seen) == (MAX_CALLS if fmt == "json" else MAX_CALLS - pieces[:MAX_CALLS].count("5"))


# The regexes the scanning replaced: kept as the reference for the fence and call-shape checks.
OLD_FENCE = re.compile(r"^```(?:json|python|py)?\s*\n?(.*?)\n?```$", re.DOTALL)
OLD_LOOKS_LIKE_CALL = re.compile(r"^\[?\s*[A-Za-z_][\w.]*\s*\(")
fence_text = st.lists(st.sampled_from(["```", "`", "json", "python", "py", "pyth", "\n", "\r\n", " ", "\t", "\x0c", "\u00a0",
                                       "\u2028", "x", "{}", "f(a=1)", "[", "(", ".", "_", "é", "\u0661", "²"])
                      | st.text(max_size=3), max_size=20).map("".join)


@settings(max_examples=1000, deadline=None)
@given(text=fence_text)
def test_fence_and_call_shape_scanning_match_the_old_regexes(text):
    stripped = text.strip()
    old = OLD_FENCE.match(stripped)
    assert parsers._fence_body(stripped) == (old.span(1) if old else None)
    assert parsers._looks_like_call(text) == bool(OLD_LOOKS_LIKE_CALL.match(text))
    assert parsers._looks_like_call(stripped) == bool(OLD_LOOKS_LIKE_CALL.match(stripped))


# ---- non-finite numbers ----------------------------------------------------------------------------------

NON_FINITE = ["1e309", "-1e400", "NaN", "Infinity", "-Infinity", "1" + "0" * 400 + ".5"]


@pytest.mark.parametrize("number", NON_FINITE, ids=lambda n: n[:10])
@pytest.mark.parametrize("where", ["arguments", "nested", "arguments string"])
@pytest.mark.parametrize("fmt", ["hermes", "json"])
def test_json_non_finite_numbers_are_refused(number, where, fmt):
    if where == "arguments":
        body = '{"name": "f", "arguments": {"a": %s}}' % number
    elif where == "nested":
        body = '{"name": "f", "arguments": {"a": [1, {"b": %s}]}}' % number
    else:
        body = json.dumps({"name": "f", "arguments": '{"a": %s}' % number})
    text = f"<tool_call>{body}</tool_call>" if fmt == "hermes" else body
    [r] = parse_tool_calls(text, fmt)
    assert isinstance(r, ParseError), r
    if number.lstrip("-") in ("NaN", "Infinity"):
        assert f"{number.lstrip('-')} is not valid JSON" in r.message
    else:
        assert "is out of range" in r.message and "numbers must be finite" in r.message and len(r.message) < 200
        assert number[:10] in r.message
    assert r.span == (0, len(text))


@pytest.mark.parametrize("number", ["1e309", "-1e400", "1" + "0" * 400 + ".5"], ids=lambda n: n[:10])
def test_python_non_finite_numbers_are_refused(number):
    for text in [f"f(a={number})", f"f(b=1, a=[1, {{'k': ({number},)}}])"]:
        [r] = parse_tool_calls(text, "python")
        assert isinstance(r, ParseError) and "f: argument 'a' is not a finite number" in r.message, r
    for name in ["NaN", "Infinity", "inf", "nan"]:  # names, not literals
        [r] = parse_tool_calls(f"f(a={name})", "python")
        assert isinstance(r, ParseError) and "not a literal" in r.message


@pytest.mark.parametrize("fmt", FORMATS)
def test_large_finite_numbers_still_parse(fmt):
    args = {"a": 1e308, "b": -1.7976931348623157e308, "c": 10**400, "d": 5e-324}
    [r] = parse_tool_calls(format_tool_call("f", args, fmt), fmt)
    assert isinstance(r, ParsedCall) and r.arguments == args
    [r] = parse_tool_calls(format_tool_call("f", {"x": 0}, fmt).replace("0", "1e-400"), fmt)
    assert isinstance(r, ParsedCall) and r.arguments == {"x": 0.0}
