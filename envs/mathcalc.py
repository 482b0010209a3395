r"""``pbsd/MathCalc-v0``: procedural multi-step arithmetic word problems solved with a calculator tool.

Each task is a short word problem (shopping, sharing, rates, ages, travel, savings, areas, packing,
tickets, discounts, donations) that takes 2 to 4 arithmetic steps. Every intermediate and final
value is a positive integer below 10,000 and every division is exact, so the answer is one integer,
given as ``\boxed{N}`` in an assistant turn without tool calls.
"""

from __future__ import annotations

import random
from typing import Callable

from pbsd_agents.tools.calculator import calculate, calculator_tool

from .answers import calculator_oracle, score_answer
from .base import ChatToolEnv, Task, Transcript
from .data import DisjointSplits

SYSTEM_PROMPT = "Solve the math problem. Use the calculator tool for arithmetic. Give the final answer as \\boxed{N}."
TEST_SIZE = 200
MAX_VALUE = 10_000
_SALT = "pbsd/MathCalc-v0"

_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack", "Kira", "Leo",
          "Maya", "Noah", "Olga", "Priya", "Quinn", "Ravi", "Sara", "Tom", "Uma", "Victor", "Wen", "Yara"]
_GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("mug", "mugs"), ("book", "books"), ("shirt", "shirts"),
          ("lamp", "lamps"), ("ball", "balls"), ("candle", "candles"), ("plant", "plants"), ("cap", "caps")]


class _Draw:
    """Builds one problem: records each calculator step (expression and integer value)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.steps: list[tuple[str, int]] = []

    def calc(self, expression: str, value: int) -> int:
        if not 0 < value < MAX_VALUE:
            raise _Redraw
        self.steps.append((expression, int(value)))
        return int(value)

    def name(self) -> str:
        return self.rng.choice(_NAMES)


class _Redraw(Exception):
    """The drawn numbers broke a bound; draw again (from the same generator, so still deterministic)."""


def _divisors(n: int, low: int, high: int) -> list[int]:
    return [d for d in range(low, min(high, n - 1) + 1) if n % d == 0]


# ---- templates: each draws numbers, records the steps and returns the question ------------------


def _shopping(d: _Draw) -> str:
    r = d.rng
    (g1, g1s), (g2, g2s) = r.sample(_GOODS, 2)
    a, p, b, q = r.randint(2, 9), r.randint(2, 25), r.randint(2, 9), r.randint(2, 15)
    x = d.calc(f"{a}*{p}", a * p)
    y = d.calc(f"{b}*{q}", b * q)
    total = d.calc(f"{x}+{y}", x + y)
    bill = (total // 50 + r.randint(1, 2)) * 50
    d.calc(f"{bill}-{total}", bill - total)
    return (f"{d.name()} buys {a} {g1s} at ${p} each and {b} {g2s} at ${q} each, and pays with ${bill}. "
            f"How many dollars of change are given back?")


def _sharing(d: _Draw) -> str:
    r = d.rng
    trays, per_tray, boxes = r.randint(2, 9), r.randint(6, 24), r.randint(2, 8)
    total = d.calc(f"{trays}*{per_tray}", trays * per_tray)
    eaten = total % boxes or boxes
    eaten += boxes * r.randint(0, 2)
    rest = d.calc(f"{total}-{eaten}", total - eaten)
    d.calc(f"{rest}/{boxes}", rest // boxes)
    return (f"A baker makes {trays} trays of {per_tray} cookies. {eaten} cookies are eaten, and the rest "
            f"are shared equally among {boxes} boxes. How many cookies are in each box?")


def _printing(d: _Draw) -> str:
    r = d.rng
    rate, m, n = r.randint(5, 40), r.randint(5, 30), r.randint(5, 30)
    minutes = d.calc(f"{m}+{n}", m + n)
    pages = d.calc(f"{rate}*{minutes}", rate * minutes)
    text = (f"A printer prints {rate} pages per minute. It runs for {m} minutes in the morning and {n} minutes "
            f"in the afternoon.")
    sizes = _divisors(pages, 4, 60)
    if not sizes:
        return text + " How many pages does it print?"
    size = r.choice(sizes)
    d.calc(f"{pages}/{size}", pages // size)
    return text + f" The pages are bound into booklets of {size} pages. How many booklets are made?"


def _ages(d: _Draw) -> str:
    r = d.rng
    kid = r.randint(4, 15)
    k = r.randint(max(2, -(-22 // kid)), max(2, 50 // kid))
    gap = r.randint(20, 35)
    mother = d.calc(f"{kid}*{k}", kid * k)
    grandma = d.calc(f"{mother}+{gap}", mother + gap)
    d.calc(f"{kid}+{mother}+{grandma}", kid + mother + grandma)
    name = d.name()
    return (f"{name} is {kid} years old. {name}'s mother is {k} times as old, and the grandmother is {gap} "
            f"years older than the mother. What is the sum of their three ages?")


def _travel(d: _Draw) -> str:
    r = d.rng
    s1, h1, s2, h2 = 5 * r.randint(6, 24), r.randint(2, 6), 5 * r.randint(6, 24), r.randint(2, 6)
    x = d.calc(f"{s1}*{h1}", s1 * h1)
    y = d.calc(f"{s2}*{h2}", s2 * h2)
    km = d.calc(f"{x}+{y}", x + y)
    text = f"A train travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours."
    per_litre = _divisors(km, 5, 25)
    if not per_litre or r.random() < 0.3:
        return text + " How many km does it travel in total?"
    f = r.choice(per_litre)
    d.calc(f"{km}/{f}", km // f)
    return text + f" It uses 1 litre of fuel every {f} km. How many litres of fuel does it use?"


def _savings(d: _Draw) -> str:
    r = d.rng
    weekly, weeks, k = r.randint(5, 60), r.randint(4, 20), r.randint(2, 6)
    total = d.calc(f"{weekly}*{weeks}", weekly * weeks)
    spent = r.randint(1, total // 2)
    spent += (total - spent) % k
    rest = d.calc(f"{total}-{spent}", total - spent)
    d.calc(f"{rest}/{k}", rest // k)
    return (f"{d.name()} saves ${weekly} every week for {weeks} weeks, spends ${spent} on a bike and splits "
            f"the rest equally among {k} charities. How many dollars does each charity get?")


def _garden(d: _Draw) -> str:
    r = d.rng
    length, width, grams = r.randint(5, 30), r.randint(4, 20), r.randint(2, 9)
    area = d.calc(f"{length}*{width}", length * width)
    paved = r.randint(1, area // 2)
    rest = d.calc(f"{area}-{paved}", area - paved)
    d.calc(f"{rest}*{grams}", rest * grams)
    return (f"A garden is {length} m long and {width} m wide. A path covers {paved} square metres, and the rest "
            f"is sown with {grams} grams of seed per square metre. How many grams of seed are used?")


def _factory(d: _Draw) -> str:
    r = d.rng
    per_day, days, box = r.randint(20, 150), r.randint(2, 7), r.randint(4, 24)
    total = d.calc(f"{per_day}*{days}", per_day * days)
    faulty = r.randint(1, per_day // 2)
    faulty += (total - faulty) % box
    good = d.calc(f"{total}-{faulty}", total - faulty)
    d.calc(f"{good}/{box}", good // box)
    return (f"A factory makes {per_day} toys a day for {days} days. {faulty} toys are faulty, and the good ones "
            f"are packed in boxes of {box}. How many boxes are filled?")


def _tickets(d: _Draw) -> str:
    r = d.rng
    price, adults, kids = 2 * r.randint(4, 20), r.randint(1, 6), r.randint(1, 8)
    half = d.calc(f"{price}/2", price // 2)
    x = d.calc(f"{kids}*{half}", kids * half)
    y = d.calc(f"{adults}*{price}", adults * price)
    d.calc(f"{x}+{y}", x + y)
    return (f"An adult ticket costs ${price} and a child ticket costs half as much. A group buys {adults} adult "
            f"and {kids} child tickets. How many dollars do they pay?")


def _discount(d: _Draw) -> str:
    r = d.rng
    pct = r.choice([10, 20, 25, 30, 40, 50])
    step = {10: 10, 20: 5, 25: 4, 30: 10, 40: 5, 50: 2}[pct]  # keeps price*pct/100 an integer
    price, n = step * r.randint(max(1, 20 // step), 400 // step), r.randint(2, 6)
    off = d.calc(f"{price}*{pct}/100", price * pct // 100)
    sale = d.calc(f"{price}-{off}", price - off)
    d.calc(f"{n}*{sale}", n * sale)
    good, goods = r.choice(_GOODS)
    return (f"A {good} costs ${price} and is on sale for {pct}% off. {d.name()} buys {n} {goods} at the sale "
            f"price. How many dollars does that cost?")


def _library(d: _Draw) -> str:
    r = d.rng
    shelves, per_shelf = r.randint(3, 40), r.randint(10, 60)
    total = d.calc(f"{shelves}*{per_shelf}", shelves * per_shelf)
    gone = r.randint(1, total - 1)
    d.calc(f"{total}-{gone}", total - gone)
    return (f"A library has {shelves} shelves with {per_shelf} books each. It gives away {gone} books. "
            f"How many books are left?")


TEMPLATES: dict[str, Callable[[_Draw], str]] = {
    "shopping": _shopping, "sharing": _sharing, "printing": _printing, "ages": _ages, "travel": _travel,
    "savings": _savings, "garden": _garden, "factory": _factory, "tickets": _tickets, "discount": _discount,
    "library": _library,
}


def draw_problem(seed: str) -> tuple[str, str, list[tuple[str, int]]]:
    """Draw one problem from a string seed: ``(template name, question, [(expression, value), ...])``;
    the last value is the answer.

    Example:
        >>> kind, question, steps = draw_problem("example")
        >>> draw_problem("example") == (kind, question, steps)
        True
        >>> 2 <= len(steps) <= 4 and 0 < steps[-1][1] < 10_000
        True
    """
    rng = random.Random(seed)  # str seeds hash with SHA-512: the same task on every run and machine
    while True:
        kind = rng.choice(list(TEMPLATES))
        draw = _Draw(rng)
        try:
            question = TEMPLATES[kind](draw)
        except _Redraw:
            continue
        return kind, question, draw.steps


def _draw(split: str, index: int, attempt: int) -> tuple[str, str, list[tuple[str, int]]]:
    # test seeds carry no attempt: a test task is never redrawn, only skipped when it repeats one
    return draw_problem(f"{_SALT}|test|{index}" if split == "test" else f"{_SALT}|train|{index}|{attempt}")


# The test split is the first 200 distinct questions of the test seeds; a train draw equal to one is redrawn.
SPLITS = DisjointSplits(_draw, key=lambda drawn: drawn[1], test_size=TEST_SIZE, distinct_test=True)


class MathCalcEnv(ChatToolEnv):
    r"""Procedural arithmetic word problems with a ``calculator`` tool; the answer goes in ``\boxed{}``.

    Task ``i`` of a split is drawn from its own generator seeded with ``(split, i)``. ``"test"`` is a
    fixed set of 200 distinct tasks; ``"train"`` is infinite (``num_tasks`` is None) and skips any draw whose
    question text is in the test set, so the splits never share a problem. Reward is 1 iff the last
    ``\boxed{}`` of the final turn (the first one without a tool call) equals the answer exactly.
    The privileged context is a worked solution listing the calculator calls and their results.

    Args: those of :class:`~pbsd_agents.envs.base.ChatToolEnv` (``split``, ``max_turns`` = 8, ...).

    Example:
        >>> import gymnasium, pbsd_agents
        >>> env = gymnasium.make("pbsd/MathCalc-v0", split="test")
        >>> obs, info = env.reset(seed=0)
        >>> [m["role"] for m in obs], info["tools"][0]["function"]["name"]
        (['system', 'user'], 'calculator')
        >>> info["privileged"]
        'Step 1: calculator(...) -> result = ... Answer: \\boxed{...}'
        >>> for action in env.unwrapped.oracle_actions():
        ...     obs, reward, terminated, truncated, info = env.step(action)
        >>> reward, terminated, info["success"]
        (1.0, True, True)
    """

    def __init__(self, split: str = "train", **kwargs):
        super().__init__(split=split, **kwargs)
        self.num_tasks = TEST_SIZE if split == "test" else None
        self._tool = calculator_tool()

    def draw(self, index: int) -> tuple[str, str, list[tuple[str, int]]]:
        """Template, question and steps of task ``index`` of this split."""
        return SPLITS.task(self.split, index)

    def make_task(self, index: int) -> Task:
        kind, question, steps = self.draw(index)
        answer = steps[-1][1]
        worked = " ".join(f"Step {k}: calculator({e}) -> {calculate(e)}." for k, (e, _) in enumerate(steps, 1))
        return Task(
            task_id=f"mathcalc-{self.split}-{index}",
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            privileged=f"{worked} Answer: \\boxed{{{answer}}}",
            oracle=calculator_oracle([e for e, _ in steps], answer, self.tool_format, self.max_turns),
            tools=[self._tool],
            gold=answer,
        )

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        reward, extra = score_answer(transcript.final_text, self.task.gold)
        return reward, {**extra, "answer": self.task.gold}
