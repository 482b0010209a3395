r"""``pbsd/GSM8K-v0``: grade-school math word problems in GSM8K's JSONL format, optional calculator tool.

A record is ``{"question": ..., "answer": ...}``; ``answer`` is a worked solution whose arithmetic is
annotated as ``<<48/2=24>>`` and whose last line is ``#### <final answer>``. The model answers with
``\boxed{...}``, compared numerically and exactly with the final answer (``1,080``, ``$5``, ``7.0``
all count).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pbsd_agents.tools.calculator import calculate, calculator_tool

from .answers import calculator_oracle, format_fraction, parse_number, score_answer
from .base import ChatToolEnv, Task, Transcript
from .data import DataArg, split_records

SYSTEM_PROMPT_CALC = "Solve the math problem. Use the calculator tool for arithmetic. Give the final answer as \\boxed{N}."
SYSTEM_PROMPT_PLAIN = "Solve the math problem step by step. Give the final answer as \\boxed{N}."

_ANNOTATION = re.compile(r"(\$?)<<([^<>]*)>>")
_PLAIN_NUMBER = re.compile(r"\s*[\d.,]*\s*")  # an "annotation" like <<12=12>> computes nothing
_WRITABLE = re.compile(r"[\d(.].*[-+*/%].*")  # starts like an expression and has an operator
_DATA = DataArg("GSM8KEnv", "data_path", "a local GSM8K-format JSONL file (e.g. 'data/gsm8k/train.jsonl') or a "
                "Hugging Face dataset name such as 'openai/gsm8k'")


def split_solution(answer: str) -> tuple[str, str]:
    """Split a GSM8K ``answer`` field into (worked solution, final answer after ``####``).

    Example:
        >>> split_solution("2*3 = <<2*3=6>>6 apples.\\n#### 6")
        ('2*3 = <<2*3=6>>6 apples.', '6')
    """
    head, sep, final = answer.rpartition("####")
    if not sep:
        raise ValueError("no '#### <final answer>' line")
    return head.strip(), final.strip()


def annotations(solution: str) -> list[tuple[str, str]]:
    """The ``<<expression=result>>`` annotations of a solution, as ``(expression, result)`` pairs;
    trivial ones (``<<12=12>>``) are left out.

    Example:
        >>> annotations("She has 48/2 = <<48/2=24>>24 clips, <<24+48=72>>72 in all, <<72=72>>72.")
        [('48/2', '24'), ('24+48', '72')]
    """
    pairs = []
    for match in _ANNOTATION.finditer(solution):
        expression, sep, result = match.group(2).rpartition("=")
        if sep and not _PLAIN_NUMBER.fullmatch(expression):
            pairs.append((expression.strip(), result.strip()))
    return pairs


def rewrite_annotations(solution: str) -> str:
    """Turn the ``<<a*b=c>>`` annotations into readable steps ``a*b = c``.

    When the text already shows the computation (``48/2 = <<48/2=24>>24``), or the annotation is
    trivial (``<<12=12>>``) or malformed, it is dropped; otherwise the expression is written out
    before the result it produced.

    Example:
        >>> rewrite_annotations("She sold 48/2 = <<48/2=24>>24 clips.")
        'She sold 48/2 = 24 clips.'
        >>> rewrite_annotations("He pays $<<3*5=15>>15 and has <<15+2=17>>17 left.")
        'He pays 3*5 = $15 and has 15+2 = 17 left.'
    """

    def replace(match: re.Match) -> str:
        dollar, body = match.group(1), match.group(2)
        expression, sep, _ = body.rpartition("=")
        before = solution[: match.start()].rstrip(" $\u20ac\u00a3")  # currency signs: $, euro, pound
        if not sep or not _WRITABLE.fullmatch(expression.strip()) or before.endswith("="):
            return dollar
        return f"{expression.strip()} = {dollar}"

    return _ANNOTATION.sub(replace, solution)


def _check_record(record: Any, where: str) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not isinstance(record.get("answer"), str):
        raise ValueError(f"{where}: expected an object with string fields 'question' and 'answer'")
    if "####" not in record["answer"]:
        raise ValueError(f"{where}: 'answer' has no '#### <final answer>' line")
    return {"question": record["question"], "answer": record["answer"]}


class GSM8KEnv(ChatToolEnv):
    r"""GSM8K-format math word problems; the final answer goes in ``\boxed{}``.

    Args:
        data_path: a local JSONL file (one ``{"question", "answer"}`` object a line), or, when that is
            not an existing file, a Hugging Face dataset name ``owner/name`` (e.g. ``"openai/gsm8k"``,
            config ``"main"`` by default), loaded with the ``datasets`` package (needs network).
            Required: the kit ships no data.
        split: ``"train"`` or ``"test"``.
        holdout_every: how a local file maps onto the splits (:func:`~pbsd_agents.envs.data.holdout`).
            ``10`` (default): records 10, 20, 30, ... (1-based line order) are ``"test"``, all others
            ``"train"`` (747 / 6,726 of GSM8K's 7,473 training problems). ``None``: the file already is
            the requested split (e.g. GSM8K's official ``test.jsonl`` with ``split="test"``): every record
            is used. A Hub dataset always uses its own split of that name; ``holdout_every`` is then ignored.
        use_calculator: offer the ``calculator`` tool (default True).
        hf_config: the Hub dataset's config name (default: ``"main"`` for ``*gsm8k``, else none).
        max_turns: assistant turns before truncation (default 12: up to 9 annotated steps + answer).
        Other arguments: those of :class:`~pbsd_agents.envs.base.ChatToolEnv`.

    Task ``i`` is the ``i``-th record of the split (``options={"index": i}``); ``num_tasks`` counts
    them. The privileged context is the reference solution, annotations rewritten as ``a*b = c``
    steps, and the final answer. The oracle calls the calculator once per annotation it can
    evaluate (one call per turn; trivial ``<<12=12>>`` ones skipped), then answers ``\boxed{N}``;
    without the calculator it only answers.

    Example:
        >>> import gymnasium, pbsd_agents, json, tempfile
        >>> rec = {"question": "Tom has 3 bags of 4 apples and eats 2. How many are left?",
        ...        "answer": "He has 3*4 = <<3*4=12>>12 apples.\nHe has 12-2 = <<12-2=10>>10 left.\n#### 10"}
        >>> path = tempfile.mkdtemp() + "/one.jsonl"
        >>> with open(path, "w") as f:
        ...     _ = f.write(json.dumps(rec) + "\n")
        >>> env = gymnasium.make("pbsd/GSM8K-v0", data_path=path, holdout_every=None)
        >>> obs, info = env.reset(seed=0)
        >>> print(info["privileged"])
        He has 3*4 = 12 apples.
        He has 12-2 = 10 left.
        Answer: \boxed{10}
        >>> for action in env.unwrapped.oracle_actions():
        ...     obs, reward, terminated, truncated, info = env.step(action)
        >>> reward, info["success"]
        (1.0, True)
    """

    def __init__(
        self,
        data_path: str | os.PathLike | None = None,
        split: str = "train",
        *,
        holdout_every: int | None = 10,
        use_calculator: bool = True,
        hf_config: str | None = None,
        max_turns: int = 12,
        **kwargs,
    ):
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        if not isinstance(use_calculator, bool):
            raise ValueError(f"use_calculator must be True or False, got {use_calculator!r}")
        self.data_path = str(data_path)
        self.use_calculator = use_calculator
        if hf_config is None and str(data_path).lower().endswith("gsm8k"):
            hf_config = "main"  # openai/gsm8k has configs "main" and "socratic"
        records = split_records(_DATA, data_path, split, holdout_every, _check_record, hf_config=hf_config)
        if not records:
            raise ValueError(f"no records for split {split!r} in {self.data_path!r}")
        self.records = records
        self.num_tasks = len(records)
        self._tools = [calculator_tool()] if use_calculator else []

    def make_task(self, index: int) -> Task:
        record = self.records[index]
        solution, final = split_solution(record["answer"])
        value = parse_number(final)
        gold = format_fraction(value) if value is not None else final
        if self.use_calculator:
            expressions = [e for e, _ in annotations(solution) if calculate(e).startswith("result = ")]
            oracle = calculator_oracle(expressions, gold, self.tool_format, self.max_turns)
        else:
            oracle = calculator_oracle([], gold, self.tool_format, self.max_turns)
        system = SYSTEM_PROMPT_CALC if self.use_calculator else SYSTEM_PROMPT_PLAIN
        return Task(
            task_id=f"gsm8k-{self.split}-{index}",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": record["question"]}],
            privileged=f"{rewrite_annotations(solution)}\nAnswer: \\boxed{{{gold}}}",
            oracle=oracle,
            tools=self._tools,
            gold=gold,
        )

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        reward, extra = score_answer(transcript.final_text, self.task.gold)
        return reward, {**extra, "answer": self.task.gold}
