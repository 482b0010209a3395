"""The calculator tool: arithmetic, output format, and quick refusals of anything else."""

import re

import pytest
import simpleeval
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsd_agents.tools import calculator as calc_module
from pbsd_agents.tools.calculator import CalculatorError, calculate, calculator_tool, evaluate, format_number


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("12*7", "84"),
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("6/3", "2"),
        ("7/2", "3.5"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("7 % 3", "1"),
        ("2**10", "1024"),
        ("-3 + -(-2)", "-1"),
        ("+5", "5"),
        ("1/3", "0.3333333333"),
        ("2/3", "0.6666666667"),
        ("0.1 + 0.2", "0.3"),
        ("100*1.1", "110"),
        ("12.5 * 4", "50"),
        ("80/100*10", "8"),
        ("abs(-3.5)", "3.5"),
        ("round(2.567, 2)", "2.57"),
        ("round(7.5)", "8"),
        ("min(4, 2, 9)", "2"),
        ("max(4, 2, 9)", "9"),
        ("sqrt(144)", "12"),
        ("sqrt(2)", "1.414213562"),
        ("floor(7.9) + ceil(0.1)", "8"),
        ("2**0.5 * 2**0.5", "2"),
        ("1e20", "1e+20"),
        ("123456789 * 1000", "123456789000"),
        ("  3 + 4  ", "7"),
        ("2**1023 - 2**1023", "0"),
    ],
)
def test_arithmetic(expression, expected):
    assert calculate(expression) == f"result = {expected}"


def test_tool_schema_and_format():
    tool = calculator_tool()
    assert tool.name == "calculator"
    schema = tool.to_openai()["function"]["parameters"]
    assert schema["required"] == ["expression"] and schema["properties"]["expression"]["type"] == "string"
    result = tool(expression="48/2")
    assert result.ok and result.content == "result = 24"
    # a non-string argument is rejected by schema validation, not evaluated
    assert tool.call({"expression": 3}).error_type == "invalid_arguments"
    assert tool.call({"expr": "1+1"}).error_type == "invalid_arguments"


REFUSED = [
    "9**9**9",
    "10**100000",
    "2**2**2**2**2",
    "1.5**1e10",
    "(-2)**99999",
    "2**1024",
    "(2**1000) * (2**1000)",
    "1e308 * 10",
    "1e999",
    "1" * 5000,
    "9" * 301,
    "__import__('os')",
    "__import__('os').system('ls')",
    "open('/etc/passwd')",
    "(1).real",
    "().__class__.__bases__",
    "x + 1",
    "pi",
    "lambda: 1",
    "[x for x in range(10**9)]",
    "{i: i for i in range(10)}",
    "sum([1, 2])",
    "pow(2, 3)",
    "int('5')",
    "'a' * 10",
    "True + 1",
    "1j * 1j",
    "1 < 2",
    "2 ^ 10",
    "1 << 10000",
    "1,200 + 3",
    "x = 1",
    "import os",
    "1; 2",
    "round(1.5, 10**9)",
    "round(2.5, ndigits=1)",
    "sqrt(-1)",
    "(-8) ** (1/3)",
    "1/0",
    "5 % 0",
    "0 ** -1",
    "",
    "   ",
    "(((",
    "(" * 100 + "1" + ")" * 99,
    "abs(" * 60 + "1" + ")" * 60,
]


@pytest.mark.parametrize("expression", REFUSED, ids=lambda e: e[:30])
def test_refusals_are_quick_errors(expression):
    result = calculator_tool().call({"expression": expression})
    assert result.content.startswith("error: "), result.content
    assert result.error_type != "timeout"  # the refusal is immediate, not a hung thread cut off by the limit
    assert len(result.content) < 300


@pytest.mark.parametrize("expression", ["2and 3", "12x", "3in 4"])
def test_a_number_run_into_a_word_is_an_error_not_a_warning(expression, recwarn):
    """Python parses some of these with a SyntaxWarning on stderr: in a training log that is noise
    the model never sees; the model gets the error instead."""
    assert calculate(expression).startswith("error: invalid syntax"), calculate(expression)
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]


def test_deep_nesting_within_the_length_limit_is_fine():
    assert calculate("(" * 100 + "1" + ")" * 100) == "result = 1"
    assert calculate("-" * 299 + "1") == "result = -1"


def test_recursion_and_memory_errors_are_reported(monkeypatch):
    def boom(self, expr, previously_parsed=None):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(simpleeval.SimpleEval, "eval", boom)
    assert calculate("1+1") == "error: expression too deeply nested"


def test_evaluate_raises_calculator_error():
    with pytest.raises(CalculatorError, match="names are not allowed"):
        evaluate("foo")
    with pytest.raises(CalculatorError):
        evaluate(12)  # not a string


def test_format_number():
    assert format_number(2.0) == "2"
    assert format_number(-0.0) == "0"
    assert format_number(1e15) == "1e+15"
    assert format_number(7.000000000000001) == "7"
    assert format_number(-2.5) == "-2.5"
    assert format_number(10**30) == "1" + "0" * 30


def test_no_eval_or_exec_in_the_module():
    source = open(calc_module.__file__, encoding="utf-8").read()
    assert not re.search(r"(?<![\w.])(eval|exec)\(", source)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(-10**6, 10**6), b=st.integers(-10**6, 10**6), op=st.sampled_from(["+", "-", "*", "//", "%"]))
def test_integer_arithmetic_is_exact(a, b, op):
    expression = f"{a} {op} ({b})"
    if op in ("//", "%") and b == 0:
        assert calculate(expression) == "error: division by zero"
        return
    expected = {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0, "%": a % b if b else 0}[op]
    assert calculate(expression) == f"result = {expected}"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789+-*/%().e_ abcxyz'[]{}:,^<=")), max_size=400))
def test_any_text_gives_a_result_or_an_error(text):
    out = calculate(text)
    assert out.startswith("result = ") or out.startswith("error: ")
