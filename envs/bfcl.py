"""``pbsd/BFCL-v0``: Berkeley Function Calling Leaderboard files, scored with the BFCL-style AST checker.

Data comes from the installed ``bfcl-eval`` package (``category=``, see :mod:`.bfcl_package`) or
from files the user names (``data_path=``). Data format (BFCL v3 and v4): one JSON object per line with ``id``, ``question`` (a list of turns, each a
list of chat messages; the first turn is the student's prompt) and ``function`` (schemas with BFCL
type names); the ground truth sits in a ``possible_answer`` file with the same name: ``id`` and
``ground_truth``, a list of ``{func_name: {param: [acceptable...]}}``.

Categories come from the id prefix (``simple_3`` -> ``simple``, ``live_parallel_0-0-0`` ->
``live_parallel``), else from the file name: ``simple``, ``multiple``, ``parallel``,
``parallel_multiple``, ``irrelevance`` and their ``live_`` variants, plus ``live_relevance``.
Irrelevance tasks score 1 when the model makes no call; relevance tasks when it makes any call.
Java and JavaScript are not supported; multi-turn categories are ``pbsd/BFCLMultiTurn-v0``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pbsd_agents.tools.base import Tool, acknowledge
from pbsd_agents.tools.parsers import format_hint, format_tool_calls

from .base import ChatToolEnv, Task, Transcript
from .checker import (acceptable_values, bfcl_schema_to_json_schema, check_calls, gold_value_problem, mode_for_category,
                      omittable)
from .bfcl_package import AST_CATEGORIES, VERSION_PREFIX, categories_arg, category_files
from .data import DataArg, check_holdout_every, holdout, hub_file, local_or_hub, read_records

BASE_CATEGORIES = ("simple", "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "relevance")
SYSTEM_PROMPT = ("You are given a question and a set of functions. Make the function call(s) that answer it. "
                 "If no function fits, or the question lacks required values, say so and make no call.")
IRRELEVANCE_PRIVILEGED = "None of the functions fits this request: answer without calling any function."
IRRELEVANCE_ORACLE = "None of the available functions can answer this request."
RELEVANCE_PRIVILEGED = "Call one of the functions with the values the request gives; any call counts."
_ID = re.compile(r"^(?P<cat>[A-Za-z_]+?)_\d+(?:[-_]\d+)*$")
_DATA = DataArg("BFCLEnv", "data_path", "a BFCL .json file (e.g. BFCL_v3_simple.json, with its answers in possible_answer/ "
                "beside it), a list of them, a folder of them, or a Hugging Face 'owner/dataset/file.json'")
_ANSWERS = DataArg("BFCLEnv", "answer_path", "the possible_answer file of the data file (default: possible_answer/<same "
                   "name> beside it)")
_PLACEHOLDER = {"string": "", "any": "", "integer": 0, "float": 0.0, "number": 0.0, "boolean": False,
                "array": [], "tuple": [], "dict": {}, "object": {}}


def category_of(task_id: str, file_name: str = "") -> str:
    """A task's category: the id's prefix, else the file name's (``BFCL_v3_<category>.json``).

    Example:
        >>> category_of("parallel_multiple_12"), category_of("live_simple_3-2-0"), category_of("x", "BFCL_v3_irrelevance.json")
        ('parallel_multiple', 'live_simple', 'irrelevance')
    """
    m = _ID.match(task_id or "")
    cat = m.group("cat") if m else ""
    if _supported(cat):
        return cat
    stem = re.sub(r"^BFCL_v\d+_", "", Path(file_name).stem)
    return stem if _supported(stem) else cat or stem


def _supported(category: str) -> bool:
    return category.removeprefix("live_") in BASE_CATEGORIES


def first_acceptable_call(gold_call: dict, schema: dict | None) -> tuple[str, dict]:
    """One concrete call that satisfies ``gold_call``: for each parameter that may not be omitted
    (required by the schema, or without ``""`` among its alternatives) the first alternative other
    than ``""``. A gold dict of alternatives (also inside a list of dicts) becomes a concrete dict the
    same way, one level deep: values nested further are data, compared literally.

    Example:
        >>> first_acceptable_call({"f": {"a": [1, 2], "b": ["", "x"], "c": [{"k": ["v"], "o": [""], "n": [{"x": [1]}]}]}}, None)
        ('f', {'a': 1, 'c': {'k': 'v', 'n': {'x': [1]}}})
    """
    ((name, params),) = gold_call.items()
    required = set(((schema or {}).get("parameters") or {}).get("required") or [])
    return name, {p: _concrete(_first(alts)) for p, alts in params.items() if p in required or not omittable(alts)}


def _first(alts: Any) -> Any:
    for a in acceptable_values(alts):
        if not (isinstance(a, str) and a == ""):
            return a
    return ""


def _concrete(value: Any) -> Any:
    # A top-level gold dict maps keys to lists of alternatives, also inside a list of dicts.
    if isinstance(value, dict):
        return {k: _first(v) for k, v in value.items() if not omittable(v)}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [_concrete(v) for v in value]
    return value


def _resolve(data_path: Any, answer_path: Any) -> list[tuple[Path, Path | None, str]]:
    """(data file, answer file or None, display name) for every file named by ``data_path``."""
    if isinstance(data_path, (list, tuple)):
        if not data_path:
            raise _DATA.error(data_path, "is an empty list")
        if answer_path is not None and (not isinstance(answer_path, (list, tuple)) or len(answer_path) != len(data_path)):
            raise _ANSWERS.error(answer_path, "does not fit a list data_path: give None or a list of the same length")
        answers = list(answer_path) if answer_path is not None else [None] * len(data_path)
        return [item for d, a in zip(data_path, answers) for item in _resolve(d, a)]
    found = local_or_hub(_DATA, data_path)
    answer = _answer_file(answer_path)
    if isinstance(found, tuple):
        repo_id, filename = found
        if filename is None:
            raise _DATA.error(data_path, "names no file: name the file inside the Hugging Face dataset, e.g. "
                                         "'gorilla-llm/Berkeley-Function-Calling-Leaderboard/BFCL_v3_simple.json'")
        local = hub_file(_DATA, data_path, repo_id, filename)
        if answer is None and not _supported_without_answers(category_of("", filename)):
            answer = hub_file(_DATA, data_path, repo_id, f"possible_answer/{filename}")
        return [(local, answer, filename)]
    if found.is_dir():
        if answer is not None:
            raise _ANSWERS.error(answer_path, f"is given, but data_path {str(found)!r} is a folder whose answers are "
                                              "read from its possible_answer/ folder")
        files = sorted(f for f in found.glob("*.json") if _supported(category_of("", f.name)))
        if not files:
            raise _DATA.error(data_path, f"holds no BFCL files of a supported category ({', '.join(BASE_CATEGORIES)})")
        return [item for f in files for item in _resolve(f, None)]
    if answer is None and (found.parent / "possible_answer" / found.name).is_file():
        answer = found.parent / "possible_answer" / found.name
    return [(found, answer, found.name)]


def _answer_file(answer_path: Any) -> Path | None:
    if answer_path is None:
        return None
    path = Path(os.fspath(answer_path)).expanduser()
    if not path.is_file():
        raise _ANSWERS.error(answer_path, "is not a file")
    return path


def _supported_without_answers(category: str) -> bool:
    return mode_for_category(category) in ("irrelevance", "relevance")


class BFCLEnv(ChatToolEnv):
    """Berkeley Function Calling Leaderboard tasks (``pbsd/BFCL-v0``), one assistant turn each.

    The student sees the question's first turn (with a short system prompt when the data has none)
    and the task's functions as tools (schemas converted to JSON Schema, real names, dots included).
    The answer is checked with :func:`~pbsd_agents.envs.checker.check_calls` in the category's mode;
    tools are never executed, so a call that passes the checker always scores 1. A turn with a call
    that cannot be parsed scores 0 (irrelevance: only a parsed call fails). ``info`` carries
    ``category`` (reset and last step), ``error_type`` and ``check_message`` (last step).

    Args:
        category: a category of the installed ``bfcl-eval`` package (``simple_python``, ``multiple``,
            ``parallel``, ``parallel_multiple``, their ``live_`` variants, ``irrelevance``,
            ``live_irrelevance``, ``live_relevance``), a list of them, or ``"all"``: data and answers
            come from the package (``pip install --no-deps bfcl-eval==2026.3.23``). Or instead:
        data_path: a BFCL file, a list of files (tasks concatenated in that order), a folder (its
            ``BFCL_v*_<category>.json`` files of supported categories, sorted), or ``"owner/dataset/file.json"`` on the Hugging
            Face Hub (needs ``huggingface_hub`` and a network).
        answer_path: the ``possible_answer`` file (a list, with a list ``data_path``); default:
            ``possible_answer/<same file name>`` beside each data file. Irrelevance needs none.
        split: ``"train"`` or ``"test"``, held out of each file by ``holdout_every``.
        holdout_every: the tasks at positions k, 2k, ... of each file (1-based line order, default
            k=5) are ``"test"``, the others ``"train"`` (:func:`~pbsd_agents.envs.data.holdout`);
            ``None``: the whole files are the split asked for (e.g. to evaluate on the full benchmark).
        underscore_names: show the tools with ``.`` in names written as ``_`` (for chat templates or
            APIs that refuse dots); the checker maps them back.
        tool_format: ``"hermes"`` (default), ``"json"`` or ``"python"`` (BFCL's native ``[f(a=1)]``).

    Attributes:
        data_errors: ``{task id: reason}`` for tasks of this split whose gold answer cannot be met
            (a gold function missing from the task's functions, a parameter outside its schema or
            without any acceptable value); kept, they always score 0.

    Example:
        >>> import gymnasium, json, tempfile, pbsd_agents
        >>> path = tempfile.mkdtemp() + "/BFCL_v3_irrelevance.json"   # irrelevance needs no answer file
        >>> sqrt = {"name": "math.sqrt", "description": "Square root.",
        ...         "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}, "required": ["x"]}}
        >>> row = {"id": "irrelevance_0", "question": [[{"role": "user", "content": "Tell me a joke."}]], "function": [sqrt]}
        >>> with open(path, "w") as f:
        ...     _ = f.write(json.dumps(row) + "\\n")
        >>> env = gymnasium.make("pbsd/BFCL-v0", data_path=path, split="test", holdout_every=None)
        >>> obs, info = env.reset(options={"index": 0})
        >>> info["category"], [t["function"]["name"] for t in info["tools"]]
        ('irrelevance', ['math.sqrt'])
        >>> _, reward, *_, info = env.step("None of these functions tells jokes.")
        >>> reward, info["category"]
        (1.0, 'irrelevance')
    """

    single_turn = True

    def __init__(
        self,
        data_path: Any = None,
        answer_path: Any = None,
        category: str | list[str] | None = None,
        split: str = "train",
        holdout_every: int | None = 5,
        underscore_names: bool = False,
        system_prompt: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(split=split, **kwargs)
        check_holdout_every(holdout_every)
        self.holdout_every = holdout_every
        self.underscore_names = bool(underscore_names)
        self.system_prompt = system_prompt if system_prompt is not None else f"{SYSTEM_PROMPT} {format_hint(self.tool_format)}"
        self.records: list[dict] = []
        self.data_errors: dict[str, str] = {}
        if category is not None:
            if data_path is not None or answer_path is not None:
                raise ValueError("BFCLEnv takes category= (data from the installed bfcl-eval package) or data_path= "
                                 "(your own files), not both")
            files = [(*category_files(c), f"{VERSION_PREFIX}_{c}.json") for c in categories_arg(category, AST_CATEGORIES)]
        elif data_path is None:
            raise ValueError(f"BFCLEnv needs category= (one of {', '.join(AST_CATEGORIES)}, a list of them or 'all', "
                             f"read from the installed bfcl-eval package) or data_path=: {_DATA.expected}")
        else:
            files = _resolve(data_path, answer_path)
        for data_file, answer_file, shown in files:
            self._load(data_file, answer_file, shown)
        if not self.records:
            raise ValueError(f"split {split!r} of {category or data_path!r} holds no tasks (holdout_every={holdout_every}: "
                             f"{'every task is in test' if holdout_every == 1 else 'the files are too short'})")
        self.num_tasks = len(self.records)
        self._cache: dict[int, Task] = {}

    # ---- loading -------------------------------------------------------------------------------

    def _load(self, data_file: Path, answer_file: Path | None, shown: str) -> None:
        answers: dict[str, list] | None = None
        if answer_file is not None:
            answers = {str(row.get("id")): row.get("ground_truth") for row in read_records(answer_file)}
        for pos, row in holdout(list(enumerate(read_records(data_file))), self.split, self.holdout_every):
            task_id = str(row.get("id", f"{shown}:{pos}"))
            category = category_of(task_id, shown)
            if not _supported(category):
                raise ValueError(f"{shown}: task {task_id!r} has unsupported category {category!r}; supported: "
                                 f"{', '.join(BASE_CATEGORIES)} and their live_ variants")
            mode = mode_for_category(category)
            try:
                messages = [dict(m) for m in row["question"][0]]
                functions = list(row["function"])
                tool_schemas = [bfcl_schema_to_json_schema(f.get("parameters") or {"type": "dict", "properties": {}})
                                for f in functions]
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise ValueError(f"{shown}: task {task_id!r} is not in BFCL's format: {exc}") from None
            gold = None
            if mode not in ("irrelevance", "relevance"):
                if answers is None:
                    raise ValueError(f"{shown}: category {category!r} needs its ground truth: pass answer_path= "
                                     f"(looked for possible_answer/{shown} beside the data file)")
                if task_id not in answers:
                    raise ValueError(f"{shown}: task {task_id!r} has no ground truth in the answer file")
                gold = answers[task_id]
                if not isinstance(gold, list) or not all(isinstance(g, dict) and len(g) == 1 for g in gold):
                    raise ValueError(f"{shown}: ground truth of {task_id!r} is not a list of {{func_name: {{...}}}}: {gold!r}")
                problem = _gold_problem(gold, functions)
                if problem:
                    self.data_errors[task_id] = problem
            self.records.append({"id": task_id, "category": category, "mode": mode, "messages": messages,
                                 "functions": functions, "tool_schemas": tool_schemas, "gold": gold})

    # ---- tasks ---------------------------------------------------------------------------------

    def _shown_name(self, name: str) -> str:
        return name.replace(".", "_") if self.underscore_names else name

    def make_task(self, index: int) -> Task:
        if index in self._cache:
            return self._cache[index]
        rec = self.records[index]
        messages = [dict(m) for m in rec["messages"]]
        if not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        tools, seen = [], set()
        for fn, params in zip(rec["functions"], rec["tool_schemas"]):
            name = self._shown_name(fn["name"])
            if name not in seen:  # a repeated name would break the tool box; the first one wins
                seen.add(name)
                tools.append(Tool(name, fn.get("description") or "", params, acknowledge(name)))  # never run: single turn
        if rec["mode"] == "irrelevance":
            privileged, oracle = IRRELEVANCE_PRIVILEGED, IRRELEVANCE_ORACLE
        elif rec["mode"] == "relevance":
            fn = rec["functions"][0]
            props = (fn.get("parameters") or {}).get("properties") or {}
            args = {p: _PLACEHOLDER.get(props.get(p, {}).get("type"), "")
                    for p in (fn.get("parameters") or {}).get("required") or []}
            privileged, oracle = RELEVANCE_PRIVILEGED, format_tool_calls([(self._shown_name(fn["name"]), args)], self.tool_format)
        else:
            by_name = {f["name"]: f for f in rec["functions"]}
            calls = []
            for g in rec["gold"]:
                name, args = first_acceptable_call(g, by_name.get(next(iter(g))))
                calls.append((self._shown_name(name), args))
            privileged = oracle = format_tool_calls(calls, self.tool_format)
        task = Task(task_id=rec["id"], messages=messages, privileged=privileged, oracle=[oracle], tools=tools,
                    gold={"mode": rec["mode"], "calls": rec["gold"] or [], "functions": rec["functions"]},
                    info={"category": rec["category"]})
        self._cache[index] = task
        return task

    # ---- the episode ---------------------------------------------------------------------------

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        gold = self.task.gold
        extra: dict[str, Any] = {"category": self.task.info["category"]}
        if transcript.parse_errors and gold["mode"] != "irrelevance":
            return 0.0, {**extra, "error_type": "parse_error", "check_message": transcript.parse_errors[0].message}
        res = check_calls(transcript.calls, gold["calls"], gold["functions"], gold["mode"],
                          underscore_names=self.underscore_names)
        return float(res.ok), {**extra, "error_type": res.error_type, "check_message": res.message}


def _gold_problem(gold: list[dict], functions: list[dict]) -> str | None:
    """Why a gold answer cannot be met by any call (None when it can)."""
    by_name = {f.get("name"): f for f in functions}
    for g in gold:
        ((name, params),) = g.items()
        if name not in by_name:
            return f"gold function {name!r} is not among the task's functions {sorted(by_name)}"
        props = ((by_name[name].get("parameters") or {}).get("properties")) or {}
        for p, alts in params.items():
            problem = gold_value_problem(alts)
            if problem:
                return f"gold parameter {p!r} of {name!r}: {problem}"
            if omittable(alts):
                continue
            if p not in props:
                return f"gold parameter {p!r} of {name!r} is not in its schema and may not be omitted"
            if not acceptable_values(alts):
                return f"gold parameter {p!r} of {name!r} has no acceptable value and may not be omitted"
    return None
