r"""``pbsd/MATH-v0``: competition math problems in the MATH / MATH-500 format, graded by math-verify.

A record is ``{"problem": ..., "solution": ..., "answer": ...}`` (MATH-500's fields; ``subject`` and
``level`` are kept when present). A record without ``answer`` takes the last ``\boxed{}`` of its
solution, as in the original MATH files. The model answers with ``\boxed{...}``; the answer is graded
by :func:`~pbsd_agents.envs.answers.grade_answer` (exact for plain numbers, math-verify otherwise).
"""

from __future__ import annotations

import os
from typing import Any

from pbsd_agents.tools.calculator import calculator_tool

from .answers import last_boxed, score_answer
from .base import ChatToolEnv, Task, Transcript
from .data import DataArg, split_records

SYSTEM_PROMPT = "Solve the math problem. Give the final answer as \\boxed{...}."
SYSTEM_PROMPT_CALC = ("Solve the math problem. You may use the calculator tool for arithmetic. "
                      "Give the final answer as \\boxed{...}.")
_DATA = DataArg("MATHEnv", "data_path", "a local JSONL file of {problem, solution, answer} records (MATH-500's "
                "format) or a Hugging Face dataset name such as 'HuggingFaceH4/MATH-500'")


def _check_record(record: Any, where: str) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("problem"), str) or not isinstance(record.get("solution"), str):
        raise ValueError(f"{where}: expected an object with string fields 'problem' and 'solution' (and 'answer')")
    answer = record.get("answer")
    if answer is None:
        answer = last_boxed(record["solution"])
        if answer is None:
            raise ValueError(f"{where}: no 'answer' field and no \\boxed{{}} answer in 'solution'")
    if not isinstance(answer, (str, int, float)) or isinstance(answer, bool) or not str(answer).strip():
        raise ValueError(f"{where}: 'answer' must be a non-empty string or number, got {answer!r}")
    out = {"problem": record["problem"], "solution": record["solution"], "answer": str(answer).strip()}
    for key in ("subject", "level", "unique_id"):
        if isinstance(record.get(key), (str, int)):
            out[key] = record[key]
    return out


class MATHEnv(ChatToolEnv):
    r"""MATH-style problems; the final answer goes in ``\boxed{}``.

    Args:
        data_path: a local JSONL file (or JSON array) of ``{"problem", "solution", "answer"}`` records, or,
            when that is not an existing file, a Hugging Face dataset name (e.g. ``"HuggingFaceH4/MATH-500"``),
            loaded with the ``datasets`` package (needs network). Required: the kit ships no data.
        split: ``"train"`` or ``"test"``.
        holdout_every: how a local file maps onto the splits (:func:`~pbsd_agents.envs.data.holdout`);
            ``10`` (default): records 10, 20, ... are ``"test"``; ``None``: the file is the split asked for.
        hf_split: the Hub split to read (default: the one named ``split``, used whole); when given,
            ``holdout_every`` divides it (MATH-500 has only ``"test"``: pass ``hf_split="test"``).
        hf_config: the Hub dataset's config name (default none).
        use_calculator: offer the ``calculator`` tool (default False).
        max_turns: assistant turns before truncation (default 8).
        Other arguments: those of :class:`~pbsd_agents.envs.base.ChatToolEnv`.

    The privileged context is the reference solution (and its answer). The oracle answers
    ``\boxed{answer}``. Reset info carries ``category`` (the subject) when the record has one.

    Example:
        >>> import gymnasium, pbsd_agents, json, tempfile
        >>> rec = {"problem": "Simplify $\\frac{2}{4}$.", "solution": "$\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.",
        ...        "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": 1}
        >>> path = tempfile.mkdtemp() + "/math.jsonl"
        >>> with open(path, "w") as f:
        ...     _ = f.write(json.dumps(rec) + "\n")
        >>> env = gymnasium.make("pbsd/MATH-v0", data_path=path, holdout_every=None)
        >>> obs, info = env.reset(seed=0)
        >>> info["category"]
        'Prealgebra'
        >>> obs, reward, terminated, truncated, info = env.step("It is 0.5, i.e. \\boxed{\\dfrac12}.")
        >>> reward, info["success"]
        (1.0, True)
    """

    def __init__(
        self,
        data_path: str | os.PathLike | None = None,
        split: str = "train",
        *,
        holdout_every: int | None = 10,
        hf_split: str | None = None,
        hf_config: str | None = None,
        use_calculator: bool = False,
        max_turns: int = 8,
        **kwargs,
    ):
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        if not isinstance(use_calculator, bool):
            raise ValueError(f"use_calculator must be True or False, got {use_calculator!r}")
        self.data_path = str(data_path)
        self.use_calculator = use_calculator
        records = split_records(_DATA, data_path, split, holdout_every, _check_record, hf_config=hf_config,
                                hf_split=hf_split)
        if not records:
            raise ValueError(f"no records for split {split!r} in {self.data_path!r}")
        self.records = records
        self.num_tasks = len(records)
        self._tools = [calculator_tool()] if use_calculator else []

    def make_task(self, index: int) -> Task:
        record = self.records[index]
        answer = record["answer"]
        privileged = record["solution"].strip()
        if last_boxed(privileged) is None:
            privileged += f"\nAnswer: \\boxed{{{answer}}}"
        return Task(
            task_id=f"math-{self.split}-{index}",
            messages=[{"role": "system", "content": SYSTEM_PROMPT_CALC if self.use_calculator else SYSTEM_PROMPT},
                      {"role": "user", "content": record["problem"]}],
            privileged=privileged,
            oracle=[f"The answer is \\boxed{{{answer}}}."],
            tools=self._tools,
            gold=answer,
            info={"category": record["subject"]} if "subject" in record else {},
        )

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        reward, extra = score_answer(transcript.final_text, self.task.gold)
        return reward, {**extra, "answer": self.task.gold}
