"""A safe arithmetic calculator tool.

Evaluation goes through the ``simpleeval`` library (never ``eval``/``exec``): the expression is
parsed with ``ast``, checked against a whitelist (numbers, ``+ - * / // % **``, parentheses, unary
signs and calls of a few named functions), then evaluated by a ``SimpleEval`` whose operator table
holds only guarded versions of those operators and whose name table is empty. Limits, each checked
*before* the costly work so a refusal is quick:

- the expression is at most :data:`MAX_EXPRESSION_CHARS` characters;
- a power is refused when its estimated size, ``exponent * log2|base|``, exceeds :data:`MAX_BITS`
  bits; a product when the operands' bit lengths add up past it; any integer result over it and
  any float overflow (``inf``/``nan``) is refused too;
- ``RecursionError``/``MemoryError`` from deep nesting are caught and reported.

Results print as ``result = <value>``: a bare number on its own line tokenizes differently from the
same number inside an answer, and after ``= `` it tokenizes the same. Integers, and floats that are
integral, print as integers; other floats with up to 10 significant digits. Failures print ``error: ...``.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable

import simpleeval

from .base import Tool
from .parsers import parse_source

MAX_EXPRESSION_CHARS = 300
MAX_BITS = 1024  # about 308 decimal digits, the size of the largest float
MAX_ROUND_DIGITS = 15

FUNCTIONS: dict[str, Callable[..., Any]] = {}  # filled below, after the guarded helpers


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate (the message is shown to the model)."""


def _check(value: Any) -> Any:
    """Refuse results that are too large or not real numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculatorError(f"result is not a real number: {value!r}"[:120])
    if isinstance(value, int):
        if value.bit_length() > MAX_BITS:
            raise CalculatorError("number too large")
    elif not math.isfinite(value):
        raise CalculatorError("number too large (or undefined)")
    return value


def _bits(x: int | float) -> float:
    """log2 of |x| (0 for |x| <= 1), without converting a big int to float."""
    ax = abs(x)
    return math.log2(ax) if ax > 1 else 0.0  # math.log2 takes ints of any size


def _pow(base: int | float, exp: int | float) -> int | float:
    if abs(base) > 1 and exp > 0 and exp * _bits(base) > MAX_BITS:
        raise CalculatorError(f"power too large (about {exp * _bits(base):.3g} bits, limit {MAX_BITS})")
    if base < 0 and isinstance(exp, float) and not exp.is_integer():
        raise CalculatorError("fractional power of a negative number")
    if base == 0 and exp < 0:
        raise CalculatorError("division by zero")
    return _check(base**exp)


def _mul(a: int | float, b: int | float) -> int | float:
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_BITS + 1:
        raise CalculatorError("number too large")
    return _check(a * b)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(*args: Any) -> Any:
        return _check(fn(*args))

    return guarded


def _round(x: int | float, ndigits: int | None = None) -> int | float:
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int) or isinstance(ndigits, bool) or abs(ndigits) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round: digits must be an integer in -{MAX_ROUND_DIGITS}..{MAX_ROUND_DIGITS}")
    return round(x, ndigits)


def _sqrt(x: int | float) -> float:
    if x < 0:
        raise CalculatorError("square root of a negative number")
    return math.sqrt(x)


FUNCTIONS.update(
    abs=_guard(abs), round=_guard(_round), min=_guard(min), max=_guard(max), sqrt=_guard(_sqrt),
    floor=_guard(math.floor), ceil=_guard(math.ceil),
)

_BINARY = {
    ast.Add: _guard(operator.add), ast.Sub: _guard(operator.sub), ast.Mult: _mul,
    ast.Div: _guard(operator.truediv), ast.FloorDiv: _guard(operator.floordiv),
    ast.Mod: _guard(operator.mod), ast.Pow: _pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_OPERATORS: dict[type, Callable[..., Any]] = {**_BINARY, **_UNARY}
ALLOWED = "numbers, + - * / // % **, parentheses and " + ", ".join(FUNCTIONS)

_HINTS = {  # why a node was refused, in words a model can act on
    ast.Name: "names are not allowed",
    ast.Attribute: "attribute access is not allowed",
    ast.Tuple: "a comma is not allowed (write 1200, not 1,200)",
    ast.BitXor: "^ is not a power here; use **",
    ast.Lambda: "lambda is not allowed",
    ast.Compare: "comparisons are not allowed",
}


def _validate(node: ast.AST) -> None:
    """Refuse anything outside the arithmetic whitelist, before simpleeval sees it."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"only real numbers are allowed, got {node.value!r}"[:120])
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise CalculatorError(_HINTS.get(type(node.op), f"operator {type(node.op).__name__} is not allowed"))
        _validate(node.left)
        _validate(node.right)
        return
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed")
        _validate(node.operand)
        return
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS:
            raise CalculatorError(f"unknown function; available: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise CalculatorError(f"{name}: keyword arguments are not allowed")
        if not node.args or len(node.args) > 20:
            raise CalculatorError(f"{name}: give 1 to 20 arguments")
        for arg in node.args:
            _validate(arg)
        return
    if isinstance(node, ast.Name):
        raise CalculatorError(f"names are not allowed (got {node.id[:40]!r}); allowed: {ALLOWED}")
    raise CalculatorError(_HINTS.get(type(node), f"{type(node).__name__} is not allowed") + f"; allowed: {ALLOWED}")


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression; raise :class:`CalculatorError` when refused.

    Example:
        >>> evaluate("(12 + 3) * 7 - 2**3")
        97
        >>> evaluate("sqrt(2) * sqrt(2)")
        2.0000000000000004
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CalculatorError("empty expression")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression too long ({len(text)} chars, limit {MAX_EXPRESSION_CHARS})")
    try:
        module = parse_source(text, "exec")
        if len(module.body) != 1 or not isinstance(module.body[0], ast.Expr):
            raise CalculatorError(f"expected one arithmetic expression; allowed: {ALLOWED}")
        _validate(module.body[0].value)
        evaluator = simpleeval.SimpleEval(operators=_OPERATORS, functions=FUNCTIONS, names={})
        return _check(evaluator.eval(text, previously_parsed=module.body[0]))
    except CalculatorError:
        raise
    except SyntaxError as exc:
        raise CalculatorError(f"invalid syntax: {exc.msg}") from None
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("number too large") from None
    except (RecursionError, MemoryError):
        raise CalculatorError("expression too deeply nested") from None
    except (simpleeval.InvalidExpression, TypeError, ValueError) as exc:
        raise CalculatorError(str(exc)[:200]) from None


def format_number(value: int | float) -> str:
    """Integers (and integral floats below 1e15) as integers, other floats with 10 significant digits.

    Example:
        >>> format_number(2.0), format_number(1 / 3), format_number(0.1 + 0.2), format_number(-0.0)
        ('2', '0.3333333333', '0.3', '0')
    """
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        text = format(value, ".10g")
        return "0" if text == "-0" else text
    return str(value)


def calculate(expression: str) -> str:
    """The tool's function: ``result = <value>`` or ``error: <why>``; never raises.

    Example:
        >>> calculate("6/3")
        'result = 2'
        >>> calculate("9**9**9")
        'error: power too large (about 1.23e+09 bits, limit 1024)'
    """
    try:
        return f"result = {format_number(evaluate(expression))}"
    except CalculatorError as exc:
        return f"error: {exc}"


def calculator_tool() -> Tool:
    """The ``calculator`` tool: one string argument, ``expression``.

    Example:
        >>> calc = calculator_tool()
        >>> calc(expression="12*7").content
        'result = 84'
        >>> calc(expression="(1 + 2) / 4").content
        'result = 0.75'
        >>> calc(expression="__import__('os')").content
        'error: unknown function; available: abs, round, min, max, sqrt, floor, ceil'
    """
    return Tool(
        "calculator",
        "Evaluate an arithmetic expression, e.g. '(12 + 3) * 7'. Supports + - * / // % ** "
        "and parentheses, and the functions " + ", ".join(FUNCTIONS) + ".",
        {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "the arithmetic expression"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
        calculate,
    )
