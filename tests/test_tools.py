"""Tool and ToolBox: validation, time limit, output cap, errors as results, OpenAI format."""

import json
import threading
import time

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsd_agents.tools import Tool, ToolBox, ToolResult
from pbsd_agents.tools.base import render_output

ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


def make_add(**kw):
    return Tool("add", "Add two integers.", ADD_SCHEMA, lambda a, b: f"result = {a + b}", **kw)


# ---- calling and rendering -----------------------------------------------------------------------


def test_check_arguments_false_passes_arguments_unchecked():
    tool = make_add(check_arguments=False)
    assert tool.call({"a": "2", "b": "3"}).content == "result = 23"  # the schema would refuse strings
    assert tool.call([1, 2]).error_type == "invalid_arguments"  # still a JSON object
    assert tool.call({"a": 1}).error_type == "tool_error"  # a missing argument fails inside the tool
    assert tool.to_openai()["function"]["parameters"] == ADD_SCHEMA




def test_call_returns_rendered_string():
    r = make_add().call({"a": 2, "b": 3})
    assert r == ToolResult(True, "result = 5", None)
    assert make_add()(a=1, b=1).content == "result = 2"


@pytest.mark.parametrize(
    "value, text",
    [("plain", "plain"), ({"x": [1, 2]}, '{"x": [1, 2]}'), (None, "null"), (3.5, "3.5"), ("é", "é"), ([], "[]")],
)
def test_return_values_render_as_text(value, text):
    tool = Tool("t", "d", {"type": "object"}, lambda: value)
    assert tool.call({}).content == text
    assert render_output(value) == text


def test_unserialisable_return_value_falls_back_to_str():
    class Thing:
        def __str__(self):
            return "a thing"

    assert Tool("t", "d", {"type": "object"}, lambda: {"x": Thing()}).call({}).content == '{"x": "a thing"}'


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, field",
    [({"a": "2", "b": 3}, "a"), ({"a": 2, "b": 1.5}, "b"), ({"a": 2, "b": None}, "b")],
)
def test_wrong_type_names_the_field(arguments, field):
    r = make_add().call(arguments)
    assert (r.ok, r.error_type) == (False, "invalid_arguments")
    assert f"field '{field}'" in r.content and "is not of type 'integer'" in r.content
    assert r.content.startswith("error: invalid arguments for tool 'add'")


def test_missing_required_and_extra_fields_are_named():
    missing = make_add().call({"a": 1})
    assert not missing.ok and "'b' is a required property" in missing.content
    extra = make_add().call({"a": 1, "b": 2, "c": 3})
    assert not extra.ok and "'c'" in extra.content


def test_nested_field_path_is_reported():
    schema = {
        "type": "object",
        "properties": {"order": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}},
    }
    r = Tool("t", "d", schema, lambda order: "ok").call({"order": {"items": ["x", 7]}})
    assert not r.ok and "field 'order.items.1'" in r.content


@pytest.mark.parametrize("arguments", [None, [], "a=1", 3, ["a", 1]])
def test_non_object_arguments_are_refused(arguments):
    r = make_add().call(arguments)
    assert (r.ok, r.error_type) == (False, "invalid_arguments")
    assert "must be a JSON object" in r.content


def test_validate_returns_none_when_valid():
    assert make_add().validate({"a": 1, "b": 2}) is None
    assert make_add().validate({"a": 1}) is not None


def test_long_validation_messages_are_shortened():
    r = Tool("t", "d", {"type": "object", "properties": {"x": {"type": "integer"}}}, lambda x: x).call({"x": "y" * 5000})
    assert not r.ok and len(r.content) < 400


def test_deeply_nested_arguments_never_raise():
    deep = json.loads("[" * 900 + "]" * 900)
    tool = Tool("t", "d", {"type": "object", "properties": {"x": {"type": "string"}}}, lambda x: x)
    assert not tool.call({"x": deep}).ok
    recursive = {"type": "object", "properties": {"x": {"$ref": "#"}}, "$defs": {}}
    nested: dict = {}
    for _ in range(2000):
        nested = {"x": nested}
    r = Tool("r", "d", recursive, lambda x: "ok").call(nested)
    assert isinstance(r, ToolResult)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="", parameters={"type": "object"}), "non-empty string"),
        (dict(name="t", parameters={"type": "array"}), "JSON Schema object"),
        (dict(name="t", parameters=[]), "JSON Schema object"),
        (dict(name="t", parameters={"type": "object"}, max_output_chars=3), "max_output_chars"),
    ],
)
def test_constructor_rejects_bad_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Tool(description="d", fn=lambda: None, **kwargs)


def test_constructor_rejects_invalid_json_schema():
    with pytest.raises(jsonschema.SchemaError):
        Tool("t", "d", {"type": "object", "properties": {"a": {"type": "no-such-type"}}}, lambda a: a)


# ---- time limit ----------------------------------------------------------------------------------


def test_slow_tool_times_out_within_the_limit():
    release = threading.Event()
    tool = Tool("slow", "Sleeps.", {"type": "object"}, lambda: release.wait(10) and "late", timeout_s=0.2)
    t0 = time.perf_counter()
    r = tool.call({})
    elapsed = time.perf_counter() - t0
    release.set()  # let the abandoned worker thread finish
    assert (r.ok, r.error_type) == (False, "timeout")
    assert "timed out after 0.2s" in r.content
    assert 0.15 < elapsed < 1.0


def test_hung_tools_are_stopped_and_do_not_slow_later_calls():
    def spin():
        while True:  # CPU-bound, never returns: the kind of tool a thread cannot simply abandon
            pass

    fast = make_add(timeout_s=1.0)

    def fast_calls() -> float:
        t0 = time.perf_counter()
        for _ in range(200):
            fast.call({"a": 1, "b": 2})
        return time.perf_counter() - t0

    baseline = min(fast_calls() for _ in range(3))
    hung = Tool("spin", "Spins.", {"type": "object"}, spin, timeout_s=0.05)
    assert all(hung.call({}).error_type == "timeout" for _ in range(20))
    deadline = time.time() + 5
    while any(t.name == "tool-spin" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.01)
    assert not [t for t in threading.enumerate() if t.name == "tool-spin"]  # every hung call was stopped
    assert min(fast_calls() for _ in range(3)) < 5 * baseline  # a ratio: 20 spinning threads would make it ~100x


def test_sleeping_tool_returns_timeout_error():
    tool = Tool("nap", "Sleeps.", {"type": "object"}, lambda: time.sleep(3), timeout_s=0.1)
    t0 = time.perf_counter()
    assert tool.call({}).error_type == "timeout"
    assert time.perf_counter() - t0 < 0.8


def test_fast_tool_under_a_limit_and_without_a_limit():
    assert make_add(timeout_s=1.0).call({"a": 1, "b": 1}).ok
    inline = Tool("t", "d", {"type": "object"}, lambda: threading.current_thread().name, timeout_s=None)
    assert inline.call({}).content == threading.current_thread().name  # no worker thread without a limit


# ---- errors inside tools -------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_s", [None, 1.0])
@pytest.mark.parametrize(
    "exc, name", [(ZeroDivisionError("division by zero"), "ZeroDivisionError"), (KeyError("k"), "KeyError"), (SystemExit(3), "SystemExit")]
)
def test_exceptions_become_error_results(exc, name, timeout_s):
    def boom():
        raise exc

    r = Tool("boom", "d", {"type": "object"}, boom, timeout_s=timeout_s).call({})
    assert (r.ok, r.error_type) == (False, "tool_error")
    assert r.content.startswith(f"error: {name}")


def test_fn_signature_mismatch_is_a_tool_error():
    tool = Tool("t", "d", {"type": "object"}, lambda: "x")  # schema allows any key, fn takes none
    r = tool.call({"unexpected": 1})
    assert (r.ok, r.error_type) == (False, "tool_error") and "TypeError" in r.content


# ---- output cap ----------------------------------------------------------------------------------


def test_long_output_is_cut_with_a_note():
    r = Tool("t", "d", {"type": "object"}, lambda: "x" * 10_000, max_output_chars=100).call({})
    assert r.ok and len(r.content) == 100
    kept = r.content.index("...")
    assert r.content.endswith(f"... [truncated {10_000 - kept} chars]")  # the exact number dropped


def test_short_output_is_untouched():
    assert Tool("t", "d", {"type": "object"}, lambda: "x" * 100, max_output_chars=100).call({}).content == "x" * 100


def test_error_messages_are_capped_too():
    def boom():
        raise ValueError("v" * 10_000)

    assert len(Tool("t", "d", {"type": "object"}, boom, max_output_chars=64).call({}).content) <= 64


@settings(max_examples=200, deadline=None)
@given(cap=st.integers(16, 300), length=st.integers(0, 2000))
def test_output_never_exceeds_the_cap(cap, length):
    out = Tool("t", "d", {"type": "object"}, lambda: "y" * length, max_output_chars=cap, timeout_s=None).call({}).content
    assert len(out) <= cap
    assert out == "y" * length or "truncated" in out or len(out) == cap


# ---- OpenAI format -------------------------------------------------------------------------------


def test_openai_format():
    spec = make_add().to_openai()
    assert spec == {
        "type": "function",
        "function": {"name": "add", "description": "Add two integers.", "parameters": ADD_SCHEMA},
    }
    json.dumps(spec)  # serialisable, as apply_chat_template needs
    jsonschema.Draft202012Validator.check_schema(spec["function"]["parameters"])


def test_openai_format_returns_fresh_data():
    tool = make_add()
    spec = tool.to_openai()
    spec["function"]["parameters"]["properties"]["a"]["type"] = "string"
    assert tool.to_openai()["function"]["parameters"] is not tool.parameters
    assert tool.call({"a": 1, "b": 2}).ok  # mutating a rendered schema does not change the tool


# ---- ToolBox -------------------------------------------------------------------------------------


def test_toolbox_dispatches_by_name():
    echo = Tool("echo", "Echo.", {"type": "object", "properties": {"text": {"type": "string"}}}, lambda text="": text)
    box = ToolBox([make_add(), echo])
    assert box.call("echo", {"text": "hi"}).content == "hi"
    assert box.call("add", {"a": 1, "b": 2}).content == "result = 3"
    assert box.call("add", {"a": "1", "b": 2}).error_type == "invalid_arguments"
    assert [s["function"]["name"] for s in box.schemas()] == ["add", "echo"]


def test_toolbox_unknown_tool_lists_available_ones():
    box = ToolBox([make_add()])
    r = box.call("sub", {})
    assert (r.ok, r.error_type) == (False, "unknown_tool")
    assert r.content == "error: unknown tool 'sub'; available tools: add"
    assert "(none)" in ToolBox().call("x", {}).content
    long = box.call("x" * 5000, {})
    assert len(long.content) < 200 and "..." in long.content


def test_toolbox_rejects_duplicate_names():
    with pytest.raises(ValueError, match="duplicate"):
        ToolBox([make_add(), make_add()])
