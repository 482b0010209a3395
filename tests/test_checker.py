"""The BFCL-style checker: one hand-written case (or more) per matching rule (see the checker's docstring), and the schema converter."""

import copy
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsd_agents.envs.checker import (
    CheckResult,
    bfcl_schema_to_json_schema,
    check_call,
    check_calls,
    mode_for_category,
    normalize_string,
)

def fn(name, properties, required=()):
    return {"name": name, "description": "", "parameters": {"type": "dict", "properties": properties, "required": list(required)}}


T = {t: {"type": t} for t in ("string", "integer", "float", "boolean", "dict", "any", "number", "object")}
S_AREA = fn("geo.area", {"base": T["float"], "unit": T["string"]}, ["base"])
S_INT = fn("f", {"n": T["integer"]}, ["n"])
S_BOOL = fn("f", {"b": T["boolean"]}, ["b"])
S_STR = fn("f", {"s": T["string"]}, ["s"])
S_ANY = fn("f", {"x": T["any"]}, ["x"])
S_LIST_INT = fn("f", {"xs": {"type": "array", "items": {"type": "integer"}}}, ["xs"])
S_LIST_FLOAT = fn("f", {"xs": {"type": "array", "items": {"type": "float"}}}, ["xs"])
S_LIST_STR = fn("f", {"xs": {"type": "array", "items": {"type": "string"}}}, ["xs"])
S_TUPLE = fn("f", {"xs": {"type": "tuple", "items": {"type": "float"}}}, ["xs"])
S_NESTED = fn("f", {"xs": {"type": "array", "items": {"type": "array"}}}, ["xs"])
S_DICT = fn("f", {"d": {"type": "dict", "properties": {"k": T["string"], "o": T["integer"]}}}, ["d"])
S_LIST_DICT = fn("f", {"ds": {"type": "array", "items": {"type": "dict"}}}, ["ds"])
S_OPT = fn("f", {"a": T["integer"], "b": T["string"], "c": T["integer"]}, ["a"])
S_NUMBER = fn("f", {"x": T["number"]}, ["x"])

G_DICT = {"d": [{"k": ["New York"], "o": ["", 1]}]}
G_LIST_DICT = {"ds": [[{"a": ["x"]}, {"a": ["y"], "b": ["", 2]}]]}

# (rule, schema, gold params, model arguments, expected error_type or None)
SINGLE_CASES = [
    # 2/6: "" = may be omitted; otherwise the gold param must be given
    ("2 optional omitted", S_AREA, {"base": [10.0], "unit": ["cm", ""]}, {"base": 10.0}, None),
    ("2 optional given", S_AREA, {"base": [10.0], "unit": ["cm", ""]}, {"base": 10.0, "unit": "cm"}, None),
    ("6 gold param omitted", S_OPT, {"a": [1], "b": ["x"]}, {"a": 1}, "missing_arg"),
    ("6 gold optional only", S_OPT, {"a": [1], "b": [""]}, {"a": 1}, None),
    # 5: required, unexpected
    ("5 required missing", S_AREA, {"base": [10.0], "unit": ["cm", ""]}, {"unit": "cm"}, "missing_required"),
    ("5 required missing though gold says optional", S_OPT, {"a": [1, ""]}, {}, "missing_required"),
    ("5 arg not in schema", S_AREA, {"base": [10.0]}, {"base": 10.0, "colour": "red"}, "unexpected_arg"),
    ("5 arg in schema, not in gold", S_OPT, {"a": [1]}, {"a": 1, "c": 3}, "unexpected_arg"),
    # 7/8: types and coercion
    ("8 int as float", S_AREA, {"base": [10.0]}, {"base": 10}, None),
    ("8 int as JSON-Schema number", S_NUMBER, {"x": [2.5, 3.0]}, {"x": 3}, None),
    ("8 float for integer", S_INT, {"n": [5]}, {"n": 5.0}, "type_error"),
    ("8 str for integer", S_INT, {"n": [5]}, {"n": "5"}, "type_error"),
    ("8 bool for integer", S_INT, {"n": [1]}, {"n": True}, "type_error"),
    ("8 int for boolean", S_BOOL, {"b": [True]}, {"b": 1}, "type_error"),
    ("8 bool for float", S_AREA, {"base": [1.0]}, {"base": True}, "type_error"),
    ("8 bool ok", S_BOOL, {"b": [False]}, {"b": False}, None),
    ("8 wrong bool", S_BOOL, {"b": [False]}, {"b": True}, "value_error"),
    ("7 int for string", S_STR, {"s": ["5"]}, {"s": 5}, "type_error"),
    ("7 any is a string", S_ANY, {"x": ["data"]}, {"x": "data"}, None),
    ("7 any rejects a list", S_ANY, {"x": ["data"]}, {"x": ["data"]}, "type_error"),
    ("7 tuple as list", S_TUPLE, {"xs": [[1.5, 2.5]]}, {"xs": [1.5, 2.5]}, None),
    ("7 dict for list", S_LIST_INT, {"xs": [[1]]}, {"xs": {"a": 1}}, "type_error"),
    # 9: variables (value has the gold's type instead of the schema's): compared literally
    ("9 variable name", S_LIST_FLOAT, {"xs": ["data['sales']"]}, {"xs": "data['sales']"}, None),
    ("9 variable mismatch", S_LIST_FLOAT, {"xs": ["data['sales']"]}, {"xs": "data[sales]"}, "value_error"),
    ("9 int gold for float schema", S_AREA, {"base": [0]}, {"base": 0.0}, None),
    ("9 bool gold for string schema", S_STR, {"s": ["", True]}, {"s": True}, None),
    # 10: item types, one level deep
    ("10 item type wrong", S_LIST_INT, {"xs": [[1, 2]]}, {"xs": [1, "2"]}, "type_error"),
    ("10 float items for int array", S_LIST_INT, {"xs": [[1, 2]]}, {"xs": [1.0, 2.0]}, "type_error"),
    ("10 int items for float array, float gold", S_LIST_FLOAT, {"xs": [[1.0, 2.0]]}, {"xs": [1, 2]}, "type_error"),
    ("10 int items for float array, int gold", S_LIST_FLOAT, {"xs": [[1, 2]]}, {"xs": [1, 2]}, None),
    ("10 items unchecked below one level", S_NESTED, {"xs": [[[1, "a"]]]}, {"xs": [[1, "a"]]}, None),
    ("10 nested list item not a list", S_NESTED, {"xs": [[[1]]]}, {"xs": [1]}, "type_error"),
    # 11: string normalisation
    ("11 punctuation and case", S_STR, {"s": ["April 1, 2024"]}, {"s": "april 1 2024"}, None),
    ("11 dash underscore slash", S_STR, {"s": ["New York/NY"]}, {"s": "new_york-ny"}, None),
    ("11 * and ^", S_STR, {"s": ["x^2*y"]}, {"s": "x2y"}, None),
    ("11 quotes", S_STR, {"s": ["it's"]}, {"s": 'it"s'}, None),
    ("11 other chars count", S_STR, {"s": ["a+b"]}, {"s": "ab"}, "value_error"),
    ("11 different word", S_STR, {"s": ["Paris"]}, {"s": "Rome"}, "value_error"),
    ("11 alternatives", S_STR, {"s": ["Boston", "Boston, MA"]}, {"s": "boston ma"}, None),
    ("11 strings in a list", S_LIST_STR, {"xs": [["New York", "LA"]]}, {"xs": ["new york", "l.a."]}, None),
    # 12: lists in order, whole-list alternatives
    ("12 order matters", S_LIST_STR, {"xs": [["a", "b"]]}, {"xs": ["b", "a"]}, "value_error"),
    ("12 either order listed", S_LIST_STR, {"xs": [["a", "b"], ["b", "a"]]}, {"xs": ["b", "a"]}, None),
    ("12 no subset", S_LIST_STR, {"xs": [["a", "b"]]}, {"xs": ["a"]}, "value_error"),
    # 13: flat dicts
    ("13 dict ok, optional key omitted", S_DICT, G_DICT, {"d": {"k": "new york"}}, None),
    ("13 dict optional key given", S_DICT, G_DICT, {"d": {"k": "New York", "o": 1}}, None),
    ("13 dict wrong value", S_DICT, G_DICT, {"d": {"k": "Boston"}}, "value_error"),
    ("13 dict extra key", S_DICT, G_DICT, {"d": {"k": "New York", "z": 1}}, "value_error"),
    ("13 dict missing key", S_DICT, G_DICT, {"d": {"o": 1}}, "value_error"),
    # 14: list of dicts, element by element
    ("14 list of dicts", S_LIST_DICT, G_LIST_DICT, {"ds": [{"a": "x"}, {"a": "Y", "b": 2}]}, None),
    ("14 list of dicts order", S_LIST_DICT, G_LIST_DICT, {"ds": [{"a": "y"}, {"a": "x"}]}, "value_error"),
    ("14 list of dicts length", S_LIST_DICT, G_LIST_DICT, {"ds": [{"a": "x"}]}, "value_error"),
    ("14 list of dicts item not a dict", S_LIST_DICT, G_LIST_DICT, {"ds": ["x", "y"]}, "type_error"),
    # 15: plain equality for numbers
    ("15 number alternatives", S_INT, {"n": [3, 4]}, {"n": 4}, None),
    ("15 number not listed", S_INT, {"n": [3, 4]}, {"n": 5}, "value_error"),
    ("15 no tolerance", S_AREA, {"base": [0.3]}, {"base": 0.1 + 0.2}, "value_error"),
    # 4: names
    ("4 dotted name exact", S_AREA, {"base": [1.0]}, {"base": 1.0}, None),
]


@pytest.mark.parametrize("rule,schema,gold,args,expected", SINGLE_CASES, ids=[c[0] for c in SINGLE_CASES])
def test_single_call_rules(rule, schema, gold, args, expected):
    res = check_calls([(schema["name"], args)], [{schema["name"]: gold}], [schema], "simple")
    assert res.error_type == expected, res
    assert res.ok == (expected is None)
    if not res.ok:
        assert res.message


def test_names_and_underscores():
    gold = [{"geo.area": {"base": [1.0]}}]
    assert check_calls([("geo.area", {"base": 1.0})], gold, [S_AREA]).ok
    assert check_calls([("geo_area", {"base": 1.0})], gold, [S_AREA]).error_type == "wrong_function"
    assert check_calls([("geo_area", {"base": 1.0})], gold, [S_AREA], underscore_names=True).ok
    assert check_calls([("Geo.area", {"base": 1.0})], gold, [S_AREA]).error_type == "wrong_function"


PLAY = fn("play", {"artist": T["string"], "minutes": T["integer"]}, ["artist"])
STOP = fn("stop", {"now": T["boolean"]})
G_PAR = [{"play": {"artist": ["Taylor Swift"], "minutes": [20]}}, {"play": {"artist": ["Maroon 5"], "minutes": [15, ""]}}]
TS = ("play", {"artist": "Taylor Swift", "minutes": 20})
M5 = ("play", {"artist": "Maroon 5"})


@pytest.mark.parametrize("calls,mode,expected", [
    # 3: exact count, every mode
    ([TS, TS], "simple", "wrong_count"),
    ([], "simple", "no_call"),
    ([TS, M5, M5], "parallel", "wrong_count"),
    ([TS], "parallel", "wrong_count"),
    ([], "parallel", "no_call"),
    # 16: order-free greedy matching
    ([TS, M5], "parallel", None),
    ([M5, TS], "parallel", None),
    ([TS, TS], "parallel", "value_error"),         # one call cannot serve two gold calls
    ([TS, ("stop", {})], "parallel", "wrong_function"),
    ([TS, ("play", {"artist": "Maroon 5", "minutes": 16})], "parallel", "value_error"),
])
def test_parallel_rules(calls, mode, expected):
    gold = G_PAR if mode == "parallel" else G_PAR[:1]
    res = check_calls(calls, gold, [PLAY, STOP], mode)
    assert res.error_type == expected, res


def test_parallel_greedy_is_first_fit():
    # Gold 1 accepts both calls, gold 2 only the first: first-fit gives call 0 to gold 1 and fails
    # gold 2 (the leaderboard's greedy matching, not a maximum matching).
    gold = [{"play": {"artist": ["a", "b"]}}, {"play": {"artist": ["a"]}}]
    s = fn("play", {"artist": T["string"]})
    assert check_calls([("play", {"artist": "a"}), ("play", {"artist": "b"})], gold, [s], "parallel").error_type == "value_error"
    assert check_calls([("play", {"artist": "b"}), ("play", {"artist": "a"})], gold, [s], "parallel").ok


def test_multiple_mode_checks_against_the_expected_function():
    gold = [{"stop": {"now": [True]}}]
    assert check_calls([("stop", {"now": True})], gold, [PLAY, STOP], "multiple").ok
    res = check_calls([("play", {"artist": "x"})], gold, [PLAY, STOP], "multiple")
    assert res.error_type == "wrong_function"
    assert check_calls([("stop", {"now": True})] * 2, gold, [PLAY, STOP], "multiple").error_type == "wrong_count"


def test_ordered_modes_compare_in_order():
    assert check_calls([TS, M5], G_PAR, [PLAY], "simple").ok
    assert check_calls([M5, TS], G_PAR, [PLAY], "simple").error_type == "value_error"


def test_irrelevance_and_relevance():
    assert check_calls([], [], [PLAY], "irrelevance").ok
    assert check_calls([TS], [], [PLAY], "irrelevance").error_type == "unexpected_call"
    assert check_calls([TS], [], [PLAY], "relevance").ok
    assert check_calls([], [], [PLAY], "relevance").error_type == "no_call"


def test_mode_dispatch_by_category():
    assert mode_for_category("simple") == "simple"
    assert mode_for_category("live_simple") == "simple"
    assert mode_for_category("multiple") == mode_for_category("live_multiple") == "multiple"
    assert mode_for_category("parallel_multiple") == mode_for_category("live_parallel") == "parallel"
    assert mode_for_category("live_irrelevance") == "irrelevance"
    assert mode_for_category("live_relevance") == "relevance"


def test_gold_function_without_schema_is_reported_not_raised():
    res = check_calls([("find_closest", {"x": 1})], [{"find_closest": {"x": [1]}}], [S_INT])
    assert res.error_type == "invalid_gold"


def test_call_forms_and_openai_schemas():
    from pbsd_agents.tools.parsers import ParsedCall

    openai = {"type": "function", "function": S_INT}
    gold = [{"f": {"n": [5]}}]
    assert check_calls([ParsedCall("f", {"n": 5}, (0, 1))], gold, [openai]).ok
    assert check_calls([{"name": "f", "arguments": {"n": 5}}], gold, [S_INT]).ok
    assert check_call("f", {"n": 5}, gold[0], S_INT) == CheckResult(True, None, "")
    assert check_calls([("f", ["not", "a", "dict"])], gold, [S_INT]).error_type == "type_error"


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        check_calls([], [], [], "sequential")
    with pytest.raises(ValueError, match="gold call"):
        check_calls([("f", {})], [{"f": {}, "g": {}}], [S_INT])
    with pytest.raises(ValueError, match="non-empty list"):
        check_calls([("f", {})], [], [S_INT], "simple")
    with pytest.raises(ValueError, match="a call must be"):
        check_calls(["f"], [{"f": {}}], [S_INT])


def test_normalize_string_examples():
    assert normalize_string(" A,b.c/d-e_f*g^h ") == "abcdefgh"
    assert normalize_string("Don't") == 'don"t'
    assert normalize_string("tab\tstays") == "tab\tstays"  # only the space character is dropped


# ---- schema conversion -------------------------------------------------------------------------


def test_schema_conversion_types_and_kept_keys():
    src = {"type": "dict", "required": ["a"], "properties": {
        "a": {"type": "float", "description": "A.", "default": 1.5, "minimum": 0},
        "b": {"type": "tuple", "items": {"type": "integer"}},
        "c": {"type": "dict", "properties": {"d": {"type": "any"}, "e": {"type": "string", "enum": ["x", "y"]}}},
        "f": {"type": "array", "items": {"type": "dict", "properties": {"g": {"type": "boolean"}}}},
        "h": {"type": "string", "optional": True, "format": "date"},
    }}
    before = copy.deepcopy(src)
    out = bfcl_schema_to_json_schema(src)
    assert src == before  # the input is not modified
    jsonschema.Draft202012Validator.check_schema(out)
    assert out["type"] == "object" and out["required"] == ["a"]
    assert out["properties"]["a"] == {"type": "number", "description": "A.", "default": 1.5, "minimum": 0}
    assert out["properties"]["b"] == {"type": "array", "items": {"type": "integer"}}
    assert out["properties"]["c"]["type"] == "object"
    assert out["properties"]["c"]["properties"]["d"] == {}
    assert out["properties"]["c"]["properties"]["e"]["enum"] == ["x", "y"]
    assert out["properties"]["f"]["items"]["type"] == "object"
    assert out["properties"]["h"]["format"] == "date"
    v = jsonschema.Draft202012Validator(out)
    assert v.is_valid({"a": 2, "b": [1, 2], "c": {"d": [1], "e": "x"}, "f": [{"g": True}]})
    assert not v.is_valid({"b": [1]})


def test_schema_conversion_odd_inputs():
    out = bfcl_schema_to_json_schema({"properties": {"x": {"type": "string", "required": True}, "y": {"type": ["integer", "float"]}}})
    jsonschema.Draft202012Validator.check_schema(out)
    assert out["type"] == "object" and out["required"] == ["x"]
    assert "required" not in out["properties"]["x"]
    assert out["properties"]["y"]["type"] == ["integer", "number"]
    out = bfcl_schema_to_json_schema({"type": "dict", "properties": {"p": {"type": "array", "items": [{"type": "float"}, {"type": "string"}]}}})
    jsonschema.Draft202012Validator.check_schema(out)
    assert out["properties"]["p"]["prefixItems"] == [{"type": "number"}, {"type": "string"}]
    with pytest.raises(ValueError, match="unknown schema type 'str' at 'x'; valid types:"):
        bfcl_schema_to_json_schema({"type": "dict", "properties": {"x": {"type": "str"}}})
    with pytest.raises(ValueError, match="must be a dict"):
        bfcl_schema_to_json_schema(["not", "a", "schema"])


def test_every_bfcl_schema_converts_to_valid_json_schema(shared_data):
    count = 0
    for path in sorted(shared_data("bfcl").glob("BFCL_*.json")):
        for line in path.read_text().splitlines():
            for f in json.loads(line)["function"]:
                jsonschema.Draft202012Validator.check_schema(bfcl_schema_to_json_schema(f["parameters"]))
                count += 1
    assert count > 1500


# ---- properties --------------------------------------------------------------------------------

_VALUES = {
    "integer": st.integers(-1000, 1000),
    "float": st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    "boolean": st.booleans(),
    "string": st.text(alphabet="abcXYZ 019,.-'", min_size=1, max_size=8),
}


@st.composite
def task(draw):
    types = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=1, max_size=4))
    props = {f"p{i}": {"type": t} for i, t in enumerate(types)}
    gold, call = {}, {}
    for name, spec in props.items():
        alts = draw(st.lists(_VALUES[spec["type"]], min_size=1, max_size=1 if spec["type"] == "boolean" else 3))
        optional = draw(st.booleans())
        gold[name] = alts + ([""] if optional else [])
        if not optional:
            call[name] = alts[0]
    required = [n for n in props if "" not in gold[n]]
    return fn("f", props, required), {"f": gold}, call


@settings(max_examples=150, deadline=None)
@given(task(), st.data())
def test_first_alternatives_pass_and_a_foreign_value_fails(t, data):
    schema, gold, call = t
    assert check_call("f", call, gold, schema).ok
    if not call:
        return
    name = data.draw(st.sampled_from(sorted(call)))
    alts = gold["f"][name]
    t_name = schema["parameters"]["properties"][name]["type"]
    new = data.draw(_VALUES[t_name].filter(
        lambda v: (normalize_string(v) not in [normalize_string(a) for a in alts if isinstance(a, str)])
        if isinstance(v, str) else v not in alts))
    res = check_call("f", {**call, name: new}, gold, schema)
    assert res.error_type == "value_error", res


@given(st.text())
def test_normalize_string_is_idempotent(s):
    assert normalize_string(normalize_string(s)) == normalize_string(s)


# ---- where the leaderboard is stricter or looser than a plain reading (each also checked against it) ---

S_TAGS = fn("f", {"tags": {"type": "array", "items": {"type": "string"}}, "n": T["integer"]}, ["n"])
S_OPTS = fn("f", {"opts": {"type": "dict", "properties": {"names": {"type": "array"}, "mode": T["string"]}}}, ["opts"])
S_DOTTED = fn("geo.area", {"base": T["float"]}, ["base"])

LEADERBOARD_CASES = [
    # an optional list given as [] where "" is acceptable: the leaderboard reads "" as the empty list
    ("optional list given []", S_TAGS, {"tags": [["a"], ""], "n": [1]}, {"n": 1, "tags": []}, True),
    ("optional list omitted", S_TAGS, {"tags": [["a"], ""], "n": [1]}, {"n": 1}, True),
    ("required list given [] without an empty alternative", S_TAGS, {"tags": [["a"]], "n": [1]}, {"n": 1, "tags": []}, False),
    # strings are normalised in a list at the top level, but a list inside a dict is compared as it is
    ("list case at the top level", S_TAGS, {"tags": [["New York"]], "n": [1]}, {"n": 1, "tags": ["new york"]}, True),
    ("list case inside a dict", S_OPTS, {"opts": [{"names": [["New York"]], "mode": ["fast"]}]},
     {"opts": {"names": ["new york"], "mode": "FAST"}}, False),
    ("list inside a dict, exact", S_OPTS, {"opts": [{"names": [["New York"]], "mode": ["fast"]}]},
     {"opts": {"names": ["New York"], "mode": "FAST"}}, True),
    # a bare string as the acceptable values: its characters are the alternatives, and it may be omitted
    ("bare string omitted", S_TAGS, {"tags": "ab", "n": [1]}, {"n": 1}, True),
    ("bare string given whole", fn("f", {"s": T["string"]}, ["s"]), {"s": "ab"}, {"s": "ab"}, False),
    ("bare string given one character", fn("f", {"s": T["string"]}, ["s"]), {"s": "ab"}, {"s": "b"}, True),
    # a bare value inside a gold dict is part of the data: compared literally
    ("nested dict compared literally", fn("f", {"d": {"type": "dict", "properties": {}}}, ["d"]),
     {"d": [{"pos": [{"x": 1.5, "y": 2}]}]}, {"d": {"pos": {"x": 1.5, "y": 2}}}, True),
    ("nested dict with another value", fn("f", {"d": {"type": "dict", "properties": {}}}, ["d"]),
     {"d": [{"pos": [{"x": 1.5, "y": 2}]}]}, {"d": {"pos": {"x": 1.5, "y": 3}}}, False),
]


@pytest.mark.parametrize("rule,schema,gold,args,ok", LEADERBOARD_CASES, ids=[c[0] for c in LEADERBOARD_CASES])
def test_leaderboard_rules(rule, schema, gold, args, ok):
    assert check_call(schema["name"], args, {schema["name"]: gold}, schema).ok is ok
    try:
        from tests.support import official_ast_checker

        checker, python = official_ast_checker()
    except pytest.skip.Exception:
        return
    official = checker([copy.deepcopy(schema)], [{schema["name"]: copy.deepcopy(args)}], [{schema["name"]: copy.deepcopy(gold)}],
                       python, "simple_python", "plain")
    assert official["valid"] is ok, official


def test_a_bare_non_string_value_can_never_be_met():
    from pbsd_agents.envs.checker import gold_value_problem

    schema = fn("f", {"n": T["integer"]}, ["n"])
    res = check_call("f", {"n": 3}, {"f": {"n": 3}}, schema)
    assert (res.ok, res.error_type) == (False, "invalid_gold")
    assert gold_value_problem(3) == "its acceptable values are a bare int 3, not a list"
    assert gold_value_problem([3]) is None and gold_value_problem("ab") is None


def test_underscore_names_reject_the_dotted_name():
    gold = [{"geo.area": {"base": [1.0]}}]
    assert check_calls([("geo_area", {"base": 1.0})], gold, [S_DOTTED], underscore_names=True).ok
    res = check_calls([("geo.area", {"base": 1.0})], gold, [S_DOTTED], underscore_names=True)
    assert res.error_type == "wrong_function"
    assert check_calls([("geo.area", {"base": 1.0})], gold, [S_DOTTED]).ok
