"""A function-call checker with the matching rules of the Berkeley Function Calling Leaderboard (AST).

Gold answers use BFCL's form: one dict per expected call, ``{func_name: {param: [acceptable, ...]}}``;
every parameter maps to a list of acceptable alternatives and ``""`` in that list means "may be
omitted". :func:`check_calls` compares a model's calls with it:

- the number of calls must equal the number of gold calls (``simple``/``multiple``: calls are
  compared in order; ``parallel``: order-free, each gold call greedily takes the first not yet
  matched call that passes);
- names match exactly (with ``underscore_names``, a gold ``a.b`` must be written ``a_b``, as the
  leaderboard expects of models that cannot write dots);
- every parameter the schema requires must be given; a parameter the schema or the gold call does
  not know is unexpected; a gold parameter may be left out only when ``""`` is acceptable;
- types follow the schema's type names (BFCL's ``dict``/``float``/``tuple``/``any`` or JSON Schema's
  ``object``/``number``): an int is accepted where a float is expected, ``bool`` and ``int`` are told
  apart, and a value with the type of the gold alternatives instead (typically a string naming a
  variable) is compared literally;
- strings are compared after dropping spaces and ``, . / - _ * ^``, lowercasing and turning ``'``
  into ``"`` (also the strings directly inside a list, and a dict's string values); lists compare
  element by element, in order, and ``[]`` matches an acceptable ``""``; a dict is matched key by key
  against a gold dict of alternatives, its non-string values literally (a list inside a dict is
  case-sensitive); a list of dicts element by element.
- the acceptable values of a parameter are a list; a bare string is read as the leaderboard reads it
  (its characters are the alternatives, and the parameter may be omitted); any other bare value
  can never be met (:func:`gold_value_problem` says so, and the BFCL loader lists such tasks).

Item types of arrays are checked one level deep only, and the int-to-float coercion applies to
top-level values only: both as in the leaderboard, so scores stay comparable with it.

:func:`bfcl_schema_to_json_schema` turns BFCL's parameter schemas into valid JSON Schema (for the
prompt and for :class:`~pbsd_agents.tools.base.Tool`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Iterable

MODES = ("simple", "multiple", "parallel", "irrelevance", "relevance")
ERROR_TYPES = (
    "wrong_function", "missing_required", "missing_arg", "unexpected_arg", "type_error", "value_error",
    "wrong_count", "no_call", "unexpected_call", "invalid_gold",
)

# Python type a value must have, by schema type name (BFCL names and JSON Schema names). "any" is a
# string in BFCL's checker; "tuple" arrives as a list (parsers turn tuples into lists).
PY_TYPES: dict[str, type] = {
    "string": str, "integer": int, "float": float, "number": float, "boolean": bool,
    "array": list, "tuple": list, "dict": dict, "object": dict, "any": str, "null": type(None),
}
_FLOATISH = ("float", "number")

# BFCL type name -> JSON Schema type name (None: no type constraint).
_JSON_TYPES: dict[str, str | None] = {
    "dict": "object", "float": "number", "tuple": "array", "any": None,
    "object": "object", "number": "number", "integer": "integer", "string": "string",
    "boolean": "boolean", "array": "array", "null": "null",
}

_STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of a check: ``ok``, and when not ok an ``error_type`` (see ``ERROR_TYPES``) and a message."""

    ok: bool
    error_type: str | None = None
    message: str = ""


_OK = CheckResult(True, None, "")


def mode_for_category(category: str) -> str:
    """The checking mode of a BFCL category (``live_`` prefixes and all).

    Example:
        >>> [mode_for_category(c) for c in ("simple", "live_multiple", "parallel_multiple", "irrelevance", "live_relevance")]
        ['simple', 'multiple', 'parallel', 'irrelevance', 'relevance']
    """
    if "irrelevance" in category:
        return "irrelevance"
    if "relevance" in category:
        return "relevance"
    if "parallel" in category:
        return "parallel"
    if "multiple" in category:
        return "multiple"
    return "simple"


def normalize_string(s: str) -> str:
    """BFCL's string normalisation: drop spaces and ``, . / - _ * ^``, lowercase, ``'`` -> ``"``.

    Example:
        >>> normalize_string("April 1, 2024") == normalize_string("april 1 2024")
        True
        >>> normalize_string("New-York_City")
        'newyorkcity'
    """
    return _STRIP.sub("", s).lower().replace("'", '"')


def _norm(value: Any) -> Any:
    """Normalise a string, or the strings directly inside a list (one level, like the leaderboard)."""
    if isinstance(value, str):
        return normalize_string(value)
    if isinstance(value, list):
        return [normalize_string(v) if isinstance(v, str) else v for v in value]
    return value


def _schema_of(fn: dict) -> dict:
    """Accept a BFCL function (``{"name", "parameters"}``) or the OpenAI ``{"type": "function", ...}`` form."""
    if isinstance(fn, dict) and fn.get("type") == "function" and isinstance(fn.get("function"), dict):
        return fn["function"]
    return fn


def _call_parts(call: Any) -> tuple[str, Any]:
    if isinstance(call, (tuple, list)) and len(call) == 2:
        return call[0], call[1]
    if hasattr(call, "name") and hasattr(call, "arguments"):
        return call.name, call.arguments
    if isinstance(call, dict) and "name" in call:
        return call["name"], call.get("arguments", {})
    raise ValueError(f"a call must be (name, arguments), a ParsedCall or {{'name', 'arguments'}}, got {call!r}")


def _gold_parts(gold_call: Any) -> tuple[str, dict]:
    if not isinstance(gold_call, dict) or len(gold_call) != 1:
        raise ValueError(f"a gold call must be a one-key dict {{func_name: {{param: [acceptable...]}}}}, got {gold_call!r}")
    ((name, params),) = gold_call.items()
    if not isinstance(params, dict):
        raise ValueError(f"gold call {name!r}: parameters must be a dict, got {params!r}")
    return name, params


def acceptable_values(acceptable: Any) -> list:
    """The acceptable values of one gold parameter, read as the leaderboard reads them.

    A list is the alternatives; a bare string is iterated, so its characters are (the leaderboard
    never wraps it); any other bare value has no alternatives (the leaderboard fails on it).

    Example:
        >>> acceptable_values(["a", ""]), acceptable_values("ab"), acceptable_values(3)
        (['a', ''], ['a', 'b'], [])
    """
    if isinstance(acceptable, list):
        return acceptable
    return list(acceptable) if isinstance(acceptable, str) else []


def omittable(acceptable: Any) -> bool:
    """Whether a gold parameter may be left out: ``""`` is among its alternatives (a bare string
    always counts: the leaderboard's ``"" in value`` is a substring test there).

    Example:
        >>> omittable(["x", ""]), omittable(["x"]), omittable("abc"), omittable(3)
        (True, False, True, False)
    """
    if isinstance(acceptable, list):
        return "" in acceptable
    return isinstance(acceptable, str)


def gold_value_problem(acceptable: Any) -> str | None:
    """Why no value can ever meet a gold parameter (None when one can)."""
    if isinstance(acceptable, (list, str)):
        return None
    return f"its acceptable values are a bare {type(acceptable).__name__} {acceptable!r}, not a list"


def _gold_type(alternatives: list) -> type | None:
    for alt in alternatives:
        if not (isinstance(alt, str) and alt == ""):
            return type(alt)
    return None


def _names_match(model_name: str, gold_name: str, underscore_names: bool) -> bool:
    # The leaderboard's underscore mode rewrites the expected name; the dotted one no longer matches.
    return model_name == (gold_name.replace(".", "_") if underscore_names else gold_name)


# ---- per-value checks --------------------------------------------------------------------------


def _check_type(param: str, value: Any, spec: dict, alternatives: list) -> tuple[CheckResult, bool]:
    """Type check of one argument. Returns (result, is_variable)."""
    type_name = spec.get("type")
    if isinstance(type_name, list):  # JSON Schema union: the first member that fits decides
        for t in type_name:
            res, var = _check_type(param, value, {**spec, "type": t}, alternatives)
            if res.ok:
                return res, var
        return res, var
    expected = PY_TYPES.get(type_name) if isinstance(type_name, str) else None
    if expected is None:  # no (known) type in the schema: nothing to check
        return _OK, False
    gold_type = _gold_type(alternatives)
    if type(value) is expected:
        items_type = (spec.get("items") or {}).get("type") if isinstance(spec.get("items"), dict) else None
        if expected is list and isinstance(items_type, str) and items_type in PY_TYPES:
            if not _items_fit(value, PY_TYPES[items_type], alternatives):
                return CheckResult(False, "type_error", f"{param!r}: items of {value!r} are not all of type {items_type!r}"), False
        # Gold written with another type than the schema's: compare literally, as BFCL does.
        return _OK, gold_type is not None and gold_type is not expected
    if gold_type is not None and type(value) is gold_type:
        return _OK, True
    return CheckResult(False, "type_error", f"{param!r}: expected type {type_name!r}, got {type(value).__name__} {value!r}"), False


def _items_fit(value: list, item_type: type, alternatives: list) -> bool:
    """One level of item-type checking: some alternative that is a list (or any that is not one)
    accepts every item by the schema's item type or by that alternative's own item type."""
    for alt in alternatives:
        if not isinstance(alt, list):
            return True  # nothing to check items against (e.g. "" = may be omitted)
        alt_type = _gold_type(alt)
        if all(type(v) is item_type or (alt_type is not None and type(v) is alt_type) for v in value):
            return True
    return False


def _dict_matches(param: str, value: dict, pattern: dict) -> str | None:
    """Match a flat dict against ``{key: [acceptable...]}``; None on success, else the reason.

    String values are normalised; any other value (a list, a nested dict) is compared literally,
    as the leaderboard does: nested values are data, not patterns.
    """
    for key, v in value.items():
        if key not in pattern:
            return f"{param!r}: unexpected key {key!r} in {value!r}"
        alts = acceptable_values(pattern[key])
        if not isinstance(pattern[key], (list, str)):
            return f"{param!r}: key {key!r} {gold_value_problem(pattern[key])}"
        if isinstance(v, str):
            ok = normalize_string(v) in [normalize_string(a) for a in alts if isinstance(a, str)]
        else:
            ok = v in alts
        if not ok:
            return f"{param!r}: value {v!r} of key {key!r} is not one of {alts!r}"
    for key, alts in pattern.items():
        if key not in value and not omittable(alts):
            return f"{param!r}: key {key!r} is missing from {value!r}"
    return None


def _check_value(param: str, value: Any, spec: dict, alternatives: list, is_variable: bool) -> CheckResult:
    if is_variable:
        ok = value in alternatives
    elif isinstance(value, dict):
        reasons = [_dict_matches(param, value, alt) for alt in alternatives if isinstance(alt, dict)]
        if any(r is None for r in reasons):
            return _OK
        return CheckResult(False, "value_error", reasons[0] if reasons else f"{param!r}: {value!r} is not one of {alternatives!r}")
    elif isinstance(value, list) and (spec.get("items") or {}).get("type") in ("dict", "object"):
        ok = any(_list_of_dicts_matches(param, value, alt) for alt in alternatives)
    elif isinstance(value, list):
        # An alternative is read element by element (so "" is the empty list, as on the leaderboard).
        ok = _norm(value) in [_norm(list(a)) for a in alternatives if isinstance(a, (list, str))]
    else:
        ok = _norm(value) in [_norm(a) for a in alternatives]
    if ok:
        return _OK
    return CheckResult(False, "value_error", f"{param!r}: {value!r} is not one of {alternatives!r}")


def _list_of_dicts_matches(param: str, value: list, alt: Any) -> bool:
    if alt == "":  # "may be omitted" read as a list: the empty one
        alt = []
    if not isinstance(alt, list) or len(alt) != len(value):
        return False
    for v, pattern in zip(value, alt):
        if not (isinstance(v, dict) and isinstance(pattern, dict) and _dict_matches(param, v, pattern) is None):
            return False
    return True


# ---- one call ----------------------------------------------------------------------------------


def check_call(name: str, arguments: Any, gold_call: dict, schema: dict | None, *, underscore_names: bool = False) -> CheckResult:
    """Check one call against one gold call and the gold function's schema.

    Example:
        >>> schema = {"name": "area", "parameters": {"type": "dict", "properties": {
        ...     "base": {"type": "float"}, "unit": {"type": "string"}}, "required": ["base"]}}
        >>> gold = {"area": {"base": [10.0], "unit": ["cm", ""]}}
        >>> check_call("area", {"base": 10}, gold, schema).ok   # int accepted as float, unit omitted
        True
        >>> check_call("area", {"base": 10, "unit": "CM"}, gold, schema).ok
        True
        >>> r = check_call("area", {"base": True}, gold, schema)
        >>> r.error_type, r.message
        ('type_error', "area: 'base': expected type 'float', got bool True")
    """
    gold_name, gold_params = _gold_parts(gold_call)
    if not isinstance(name, str) or not _names_match(name, gold_name, underscore_names):
        return CheckResult(False, "wrong_function", f"expected a call to {gold_name!r}, got {name!r}")
    if schema is None:
        return CheckResult(False, "invalid_gold", f"the gold function {gold_name!r} has no schema among the task's functions")
    if not isinstance(arguments, dict):
        return CheckResult(False, "type_error", f"{gold_name}: arguments must be a dict, got {type(arguments).__name__}")
    parameters = _schema_of(schema).get("parameters") or {}
    properties = parameters.get("properties") or {}
    for req in parameters.get("required") or []:
        if req not in arguments:
            return CheckResult(False, "missing_required", f"{gold_name}: required argument {req!r} is missing")
    for param, value in arguments.items():
        if param not in properties or param not in gold_params:
            where = "the schema" if param not in properties else "the expected call"
            return CheckResult(False, "unexpected_arg", f"{gold_name}: unexpected argument {param!r} (not in {where})")
        spec = properties[param] if isinstance(properties[param], dict) else {}
        problem = gold_value_problem(gold_params[param])
        if problem:
            return CheckResult(False, "invalid_gold", f"{gold_name}: gold parameter {param!r}: {problem}")
        alternatives = acceptable_values(gold_params[param])
        if spec.get("type") in _FLOATISH and type(value) is int:
            value = float(value)
        res, is_variable = _check_type(param, value, spec, alternatives)
        if not res.ok:
            return CheckResult(False, res.error_type, f"{gold_name}: {res.message}")
        res = _check_value(param, value, spec, alternatives, is_variable)
        if not res.ok:
            return CheckResult(False, res.error_type, f"{gold_name}: {res.message}")
    for param, acceptable in gold_params.items():
        if param not in arguments and not omittable(acceptable):
            return CheckResult(False, "missing_arg", f"{gold_name}: argument {param!r} is missing (expected one of {acceptable!r})")
    return _OK


# ---- a turn's calls ----------------------------------------------------------------------------


def check_calls(
    calls: Iterable[Any],
    gold: list[dict],
    schemas: list[dict],
    mode: str = "simple",
    *,
    underscore_names: bool = False,
) -> CheckResult:
    """Check a turn's calls against the gold calls, BFCL-style.

    Args:
        calls: the model's calls, as ``(name, arguments)`` pairs or :class:`ParsedCall` objects.
        gold: ``[{func_name: {param: [acceptable, ...]}}, ...]``, ``""`` = may be omitted.
        schemas: the task's function schemas (BFCL or OpenAI form, BFCL or JSON Schema type names).
        mode: ``simple`` / ``multiple`` (calls compared in order, one per gold call), ``parallel``
            (order-free greedy matching), ``irrelevance`` (ok iff no call), ``relevance`` (ok iff
            at least one call). :func:`mode_for_category` maps a BFCL category to its mode.
        underscore_names: a gold name ``a.b`` is expected as ``a_b`` (and ``a.b`` is then wrong).

    Example:
        >>> schemas = [{"name": "play", "parameters": {"type": "dict", "properties": {
        ...     "artist": {"type": "string"}, "minutes": {"type": "integer"}}, "required": ["artist"]}}]
        >>> gold = [{"play": {"artist": ["Taylor Swift"], "minutes": [20]}},
        ...         {"play": {"artist": ["Maroon 5"], "minutes": [15, ""]}}]
        >>> calls = [("play", {"artist": "maroon 5"}), ("play", {"artist": "Taylor Swift", "minutes": 20})]
        >>> check_calls(calls, gold, schemas, "parallel")
        CheckResult(ok=True, error_type=None, message='')
        >>> check_calls(calls[:1], gold, schemas, "parallel").error_type
        'wrong_count'
        >>> check_calls([("play", {"artist": "Taylor Swift", "minutes": "20"})], gold[:1], schemas).error_type
        'type_error'
        >>> check_calls([], [], schemas, "irrelevance").ok
        True
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    calls = [_call_parts(c) for c in calls]
    if mode == "irrelevance":
        if calls:
            return CheckResult(False, "unexpected_call", f"no call was expected, got {len(calls)}: {', '.join(str(n) for n, _ in calls)}")
        return _OK
    if mode == "relevance":
        return _OK if calls else CheckResult(False, "no_call", "a call was expected, got none")
    if not isinstance(gold, list) or not gold:
        raise ValueError(f"gold must be a non-empty list of {{func_name: {{param: [...]}}}} in mode {mode!r}, got {gold!r}")
    gold_names = [_gold_parts(g)[0] for g in gold]
    by_name: dict[str, dict] = {}
    for fn in schemas:
        fn = _schema_of(fn)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"each schema must be a dict with a 'name', got {fn!r}")
        by_name.setdefault(fn["name"], fn)
    if not calls:
        return CheckResult(False, "no_call", f"expected {len(gold)} call(s), got none")
    if len(calls) != len(gold):
        return CheckResult(False, "wrong_count", f"expected {len(gold)} call(s), got {len(calls)}")

    if mode in ("simple", "multiple"):
        for i, ((name, args), g, gname) in enumerate(zip(calls, gold, gold_names)):
            res = check_call(name, args, g, by_name.get(gname), underscore_names=underscore_names)
            if not res.ok:
                prefix = f"call {i}: " if len(gold) > 1 else ""
                return CheckResult(False, res.error_type, prefix + res.message)
        return _OK

    # parallel: each gold call, in turn, takes the first unmatched call that passes.
    free = list(range(len(calls)))
    for g, gname in zip(gold, gold_names):
        first_error: CheckResult | None = None
        for j in free:
            name, args = calls[j]
            res = check_call(name, args, g, by_name.get(gname), underscore_names=underscore_names)
            if res.ok:
                free.remove(j)
                break
            # Report the failure of a call to the right function if there is one: it says the most.
            if first_error is None or (first_error.error_type == "wrong_function" and res.error_type != "wrong_function"):
                first_error = res
        else:
            detail = first_error.message if first_error is not None else ""
            kind = first_error.error_type if first_error is not None else "wrong_function"
            return CheckResult(False, kind, f"no call matches the expected call to {gname!r}: {detail}")
    return _OK


# ---- schema conversion -------------------------------------------------------------------------


def bfcl_schema_to_json_schema(params: dict) -> dict:
    """Convert a BFCL parameter schema (type names ``dict``, ``float``, ``tuple``, ``any``...) to JSON Schema.

    ``dict`` -> ``object``, ``float`` -> ``number``, ``tuple`` -> ``array``, ``any`` -> no type
    constraint; ``properties``, ``items`` and ``additionalProperties`` are converted recursively and
    every other key (``description``, ``enum``, ``default``, ``required``...) is kept. The input is not
    modified. The result passes ``jsonschema``'s ``check_schema``.

    Example:
        >>> s = bfcl_schema_to_json_schema({"type": "dict", "required": ["xs"], "properties": {
        ...     "xs": {"type": "tuple", "items": {"type": "float"}, "description": "points"},
        ...     "how": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
        ...     "extra": {"type": "any"}}})
        >>> s["type"], s["properties"]["xs"], s["properties"]["extra"]
        ('object', {'type': 'array', 'items': {'type': 'number'}, 'description': 'points'}, {})
        >>> bfcl_schema_to_json_schema({"type": "dict", "properties": {"x": {"type": "str"}}})
        Traceback (most recent call last):
        ...
        ValueError: unknown schema type 'str' at 'x'; valid types: dict, float, tuple, any, object, number, integer, string, boolean, array, null
    """
    if not isinstance(params, dict):
        raise ValueError(f"a parameter schema must be a dict, got {params!r}")
    out = _convert(params, "")
    if "type" not in out and "properties" in out:
        out["type"] = "object"
    return out


def _convert_type(t: Any, where: str) -> Any:
    if isinstance(t, str) and t in _JSON_TYPES:
        return _JSON_TYPES[t]
    raise ValueError(f"unknown schema type {t!r} at {where or 'the top level'!r}; valid types: {', '.join(_JSON_TYPES)}")


def _convert(node: dict, where: str) -> dict:
    out = {}
    for key, value in node.items():
        if key == "type":
            if isinstance(value, list):
                types = [_convert_type(t, where) for t in value]
                if None not in types:  # a union with "any" constrains nothing
                    out["type"] = list(dict.fromkeys(types))
            else:
                new = _convert_type(value, where)
                if new is not None:
                    out["type"] = new
        elif key == "properties" and isinstance(value, dict):
            props, required = {}, list(node.get("required") or []) if isinstance(node.get("required"), list) else []
            for name, sub in value.items():
                sub = sub if isinstance(sub, dict) else {}
                flag = sub.get("required")
                if isinstance(flag, bool):  # draft-3 style per-property flag: move it to the parent
                    sub = {k: v for k, v in sub.items() if k != "required"}
                    if flag and name not in required:
                        required.append(name)
                props[name] = _convert(sub, f"{where}.{name}" if where else name)
            out["properties"] = props
            if required or "required" in node:
                out["required"] = required
        elif key == "required" and ("properties" in node or not isinstance(value, list)):
            continue  # written with "properties" (which may add draft-3 flags); a non-list is not JSON Schema
        elif key == "items":
            if isinstance(value, dict):
                out["items"] = _convert(value, f"{where}[]")
            elif isinstance(value, list):  # tuple-style items are "prefixItems" in JSON Schema 2020-12
                out["prefixItems"] = [_convert(v if isinstance(v, dict) else {}, f"{where}[{i}]") for i, v in enumerate(value)]
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = _convert(value, f"{where}.*")
        else:
            out[key] = copy.deepcopy(value)
    return out


__all__ = [
    "CheckResult", "ERROR_TYPES", "MODES", "PY_TYPES", "acceptable_values", "bfcl_schema_to_json_schema", "check_call",
    "check_calls", "gold_value_problem", "mode_for_category", "normalize_string", "omittable",
]
