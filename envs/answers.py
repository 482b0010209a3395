r"""Answer helpers shared by the math environments: find ``\boxed{...}``, read numbers, grade answers.

Grading (:func:`grade_answer`) has two stages. The fast path: when both sides read as plain numbers
they become :class:`fractions.Fraction` and are compared exactly, so ``0.5``, ``1/2``,
``\frac{1}{2}`` and ``$0.50`` are equal and ``0.333`` is not ``1/3``; thousands may be grouped with
commas (``70,000``, LaTeX's ``70{,}000``) or spaces (``70 000``, ``70\,000``, a thin space). Anything
else (``7 \times 10^4``, ``\sqrt{2}/2``, ``(1, 2)``, ``x^2+1``) goes to Hugging Face's ``math-verify``,
the grader that standard math evaluations use; it is imported on first use.

Example:
    >>> text = r"12 * 7 = 84, so she pays \boxed{\$1,084.00}."
    >>> last_boxed(text)
    '\\$1,084.00'
    >>> parse_number(last_boxed(text)), parse_number("70{,}000"), parse_number("70 000")
    (Fraction(1084, 1), Fraction(70000, 1), Fraction(70000, 1))
    >>> score_answer(text, 1084)
    (1.0, {'predicted': '\\$1,084.00'})
"""

from __future__ import annotations

import math
import re
import threading
from fractions import Fraction
from typing import Any, Sequence

from pbsd_agents.tools.parsers import format_tool_call, format_tool_calls

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
# 70 000: digit groups of three after single spaces (thin and no-break spaces were made spaces)
_SPACED = re.compile(r"(?<![\d.])\d{1,3}(?: \d{3})+(?![\d])")
_SPACES = str.maketrans({"\u2009": " ", "\u202f": " ", "\u00a0": " "})
_DECIMAL = r"(?:\d+(?:\.\d*)?|\.\d+)"
# sign, number, optional /number; then an optional percent sign, unit words and a full stop
_NUMBER = re.compile(rf"([-+]?)\s*({_DECIMAL})(?:\s*/\s*({_DECIMAL}))?\s*%?\s*(?:[A-Za-z][A-Za-z ]*)?\.?")
_MAX_NUMBER_CHARS = 200  # longer "numbers" are not answers; also keeps Fraction() cheap


def last_boxed(text: str) -> str | None:
    r"""The contents of the last complete ``\boxed{...}`` in ``text`` (nested braces balanced), or None.

    Example:
        >>> last_boxed(r"first \boxed{1}, then \boxed{\frac{3}{4}}")
        '\\frac{3}{4}'
        >>> last_boxed("no box here") is None, last_boxed(r"\boxed{12") is None
        (True, True)
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    # One pass pairs every brace; scanning forward from each \boxed{ would be quadratic on adversarial text.
    close_of: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            close_of[stack.pop()] = i
    for match in reversed(matches):
        end = close_of.get(match.end() - 1)
        if end is not None:
            return text[match.end() : end].strip()
    return None


def parse_number(text: Any) -> Fraction | None:
    r"""Read a number written the way answers are: ``1,234``, ``$5``, ``7.0``, ``3/4``, ``\frac{3}{4}``,
    ``-2``, ``45%`` (the percent sign is dropped: GSM8K writes percentages as the bare number),
    ``12 dollars``, ``x = 5``. Returns an exact Fraction, or None when the text is not one number.

    Example:
        >>> [parse_number(s) for s in ["1,234", "$5", "7.0", "3/4", r"\dfrac{3}{4}", "-2", "45%", "12 apples."]]
        [Fraction(1234, 1), Fraction(5, 1), Fraction(7, 1), Fraction(3, 4), Fraction(3, 4), Fraction(-2, 1), Fraction(45, 1), Fraction(12, 1)]
        >>> parse_number("1, 2") is None, parse_number("3/0") is None, parse_number("five") is None
        (True, True, True)
        >>> parse_number(18)
        Fraction(18, 1)
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, Fraction)):
        return Fraction(text)
    if isinstance(text, float):
        return Fraction(text) if math.isfinite(text) else None
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS:
        return None
    s = _TEXT_CMD.sub(r" \1", text.replace("{,}", ","))  # 70{,}000: LaTeX's thousands comma
    s = _FRAC.sub(r"(\1)/(\2)", s)
    for junk in ("\\$", "$", "\\%", "\\,", "\\!", "\\ ", "~", "(", ")", "{", "}"):
        s = s.replace(junk, "%" if junk == "\\%" else " ")
    s = s.replace("\u2212", "-").translate(_SPACES)  # Unicode minus sign; thin spaces
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    s = _THOUSANDS.sub("", s).strip()
    s = _SPACED.sub(lambda m: m.group(0).replace(" ", ""), s)
    match = _NUMBER.fullmatch(s)
    if match is None:
        return None
    sign, num, den = match.groups()
    value = Fraction(num)
    if den is not None:
        if Fraction(den) == 0:
            return None
        value /= Fraction(den)
    return -value if sign == "-" else value


def format_fraction(value: Fraction | int) -> str:
    """Write a number the way an answer is boxed: ``12``, ``-3``, ``7/4``.

    Example:
        >>> format_fraction(Fraction(24, 2)), format_fraction(Fraction(7, 4))
        ('12', '7/4')
    """
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def answers_match(predicted: Any, gold: Any) -> bool:
    """Exact numeric equality of two answers (strings or numbers); False if either is not a number.

    Example:
        >>> answers_match("$1,000.00", 1000), answers_match("0.75", "3/4"), answers_match("7", "8")
        (True, True, False)
    """
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and p == g


def grade_answer(predicted: Any, gold: Any) -> bool:
    r"""Whether ``predicted`` (an answer, e.g. the contents of ``\boxed{}``) equals ``gold``.

    Two plain numbers are compared exactly (the fast path, no import); otherwise ``math-verify``
    decides, as standard math graders do (sympy equivalence: ``\frac{\sqrt{2}}{2}`` equals
    ``\sqrt{2}/2``, ``7\times 10^4`` equals ``70000``).

    Example:
        >>> grade_answer("70{,}000", "70000"), grade_answer("0.333", "1/3"), grade_answer(r"\dfrac{1}{2}", "0.5")
        (True, False, True)
    """
    p, g = parse_number(predicted), parse_number(gold)
    if p is not None and g is not None:
        return p == g
    if not isinstance(predicted, str) or not predicted.strip() or len(predicted) > _MAX_VERIFY_CHARS:
        return False
    return _math_verify(predicted, str(gold))


_MAX_VERIFY_CHARS = 2000  # longer answers are not graded symbolically (and cannot stall sympy)


def _math_verify(predicted: str, gold: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:
        raise ImportError("grading non-numeric math answers needs math-verify (pip install math-verify)") from None
    # math-verify's time limits use SIGALRM, which only the main thread may set; elsewhere it runs unlimited.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=limit)
        answer = parse(f"\\boxed{{{predicted}}}", parsing_timeout=limit)
        return bool(gold_parsed and answer and verify(gold_parsed, answer, timeout_seconds=limit))
    except Exception:  # math-verify gives up on what it cannot read: not a match
        return False


def score_answer(final_text: str, gold: Any) -> tuple[float, dict]:
    r"""Reward 1.0 iff the last ``\boxed{}`` of ``final_text`` grades equal to ``gold``; with ``{"predicted": ...}``.

    Example:
        >>> score_answer(r"The answer is \boxed{42}.", "42")
        (1.0, {'predicted': '42'})
        >>> score_answer("The answer is 42.", "42")
        (0.0, {'predicted': None})
    """
    predicted = last_boxed(final_text)
    return (1.0 if predicted is not None and grade_answer(predicted, gold) else 0.0), {"predicted": predicted}


def calculator_oracle(expressions: Sequence[str], answer: Any, fmt: str, max_turns: int) -> list[str]:
    r"""Oracle turns: one ``calculator`` call per turn, then ``The answer is \boxed{answer}.``.

    When the calls would not fit in ``max_turns`` (the final turn included), several calls share a
    turn; with ``max_turns=1`` only the final answer is left.

    Example:
        >>> for turn in calculator_oracle(["12*7", "84-4"], 80, "python", 8):
        ...     print(turn)
        calculator(expression='12*7')
        calculator(expression='84-4')
        The answer is \boxed{80}.
        >>> len(calculator_oracle(["1+1"] * 5, 2, "hermes", 3))
        3
    """
    value = parse_number(answer)
    final = f"The answer is \\boxed{{{answer if value is None else format_fraction(value)}}}."
    slots = max_turns - 1
    if not expressions or slots < 1:
        return [final]
    per_turn = math.ceil(len(expressions) / slots)
    turns = []
    for i in range(0, len(expressions), per_turn):
        calls = [("calculator", {"expression": e}) for e in expressions[i : i + per_turn]]
        # a lone call is written bare (format_tool_calls would wrap it in a python list)
        turns.append(format_tool_call(*calls[0], fmt=fmt) if len(calls) == 1 else format_tool_calls(calls, fmt))
    return turns + [final]
