"""``pbsd/BFCLMultiTurn-v0``: BFCL's multi-turn categories on the package's executable backends.

One episode is one task's user turns, in order. Within a user turn the model may call functions over
several steps (each step's results come back as tool messages); a reply without a call ends the
turn, and the next user message arrives (or the episode ends after the last one). The functions are
the documented methods of the task's backend classes, instantiated fresh from the task's
``initial_config`` at every reset (:mod:`.bfcl_backends`); arguments are validated against the
function docs before a method runs.

Categories (data and answers from the installed ``bfcl-eval`` package, see :mod:`.bfcl_package`):

- ``multi_turn_base``: every turn has gold calls;
- ``multi_turn_miss_func``: a function is held out; at the turn the data says, a user message tells
  the model that more functions are available (with their schemas), and from then on it is listed;
- ``multi_turn_miss_param``: a turn lacks a value; its gold is empty: the model should ask for it
  (the next user turn gives it) rather than guess;
- ``multi_turn_long_context``: the backends load their long-context scenarios (large files, many records).

Scoring follows the leaderboard's multi-turn checker (:func:`.bfcl_backends.check_turn`): after each
user turn with gold calls, the state of the model's instances must equal that of instances that ran
the gold calls, and the gold calls' results must all have been returned to the model. The episode
scores 1 when every scored turn passes (``partial_reward=True``: the fraction that pass). Like the
leaderboard, a function the model calls is run whether or not it has been announced yet. Unlike its
inference loop, a reply whose calls cannot be parsed gets the parse errors back (as the kit's other
envs do) instead of ending the turn, and only documented methods can be called.

**Per-turn privileged context.** The teacher learns the gold calls of the turn it is in, when that
turn starts: ``reset`` gives the first turn's (``info["privileged"]``), and the step that brings the
next user message carries that turn's in ``info["privileged"]`` (for a turn without gold calls: what
to do instead). The teacher's copy of the user message is ``teacher_messages(obs, info["privileged"])``.

The last step's ``info`` has ``turn_passed`` (per user turn: True, False, or None when not scored),
``turns_passed``, ``turns_scored``, and for the first failing turn ``error_type`` and ``check_message``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pbsd_agents.tools.base import Tool, ToolBox
from pbsd_agents.tools.parsers import ParsedCall, ParseError, format_hint, format_tool_calls

from .base import ChatToolEnv, Task, Transcript
from .bfcl_backends import Backends, TurnCheck, check_turn, doc_tool, function_docs, parse_gold_call, positional_names
from .bfcl_package import MULTI_TURN_CATEGORIES, categories_arg, category_files
from .data import check_holdout_every, holdout, read_records

SYSTEM_PROMPT = ("You act for the user through the functions you are given. For each request, call the functions it "
                 "needs; you may take several steps and read each result before the next call. When the request is "
                 "done, or cannot be done, answer the user without calling a function.")
NEW_FUNCTIONS = "You can now also use these functions: {functions}\nPlease go on with my last request."
DONE = "Done."
ASK = "I cannot do this yet: some information is missing. Could you tell me what I need?"
NO_FUNCTION = "None of the functions I have can do this yet."
NOTE_ASK = ("This request lacks a value it needs: make no function call; ask the user for the missing value "
            "(the next message gives it).")
NOTE_MISSING_FUNCTION = ("No available function can do this yet: make no function call; say so "
                         "(the next message adds the function).")
FORCE_QUIT = "max_steps_per_turn"


class BFCLMultiTurnEnv(ChatToolEnv):
    """BFCL multi-turn tasks (``pbsd/BFCLMultiTurn-v0``); see the module docstring.

    Args:
        category: ``multi_turn_base`` (default), ``multi_turn_miss_func``, ``multi_turn_miss_param``,
            ``multi_turn_long_context``, a list of them, or ``"all"``.
        split: ``"train"`` or ``"test"``, held out of each category by ``holdout_every``.
        holdout_every: tasks at positions k, 2k, ... of each category are ``"test"`` (default k=5);
            ``None``: every task is in the split asked for (the full benchmark).
        max_steps_per_turn: steps with calls in one user turn before the episode is cut as failed
            (the leaderboard's limit, 20, by default).
        partial_reward: reward the fraction of scored turns that pass, instead of 1 only when all do.
        max_turns: assistant turns in the whole episode before it is truncated.
        tool_format: ``"hermes"`` (default), ``"json"`` or ``"python"``.

    Attributes:
        data_errors: ``{task id: reason}`` for tasks whose gold calls cannot run as written (kept; the
            tests list the ones found in the package's data).
    """

    def __init__(self, category: str | list[str] = "multi_turn_base", split: str = "train", holdout_every: int | None = 5,
                 max_steps_per_turn: int = 20, partial_reward: bool = False, max_turns: int = 200,
                 system_prompt: str | None = None, **kwargs: Any):
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        check_holdout_every(holdout_every)
        if not isinstance(max_steps_per_turn, int) or isinstance(max_steps_per_turn, bool) or max_steps_per_turn < 1:
            raise ValueError(f"max_steps_per_turn must be a positive int, got {max_steps_per_turn!r}")
        self.categories = categories_arg(category, MULTI_TURN_CATEGORIES)
        self.holdout_every = holdout_every
        self.max_steps_per_turn = max_steps_per_turn
        self.partial_reward = bool(partial_reward)
        self.system_prompt = system_prompt if system_prompt is not None else f"{SYSTEM_PROMPT} {format_hint(self.tool_format)}"
        self.records: list[dict] = []
        self.data_errors: dict[str, str] = {}
        for cat in self.categories:
            data_file, answer_file = category_files(cat)
            answers = {str(r["id"]): r["ground_truth"] for r in read_records(answer_file)}
            for row in holdout(read_records(data_file), split, holdout_every):
                self.records.append(self._record(row, answers, cat))
        if not self.records:
            raise ValueError(f"split {split!r} of {self.categories} holds no tasks (holdout_every={holdout_every})")
        self.num_tasks = len(self.records)
        self._cache: dict[int, Task] = {}
        self._model: Backends | None = None

    # ---- loading -------------------------------------------------------------------------------

    def _record(self, row: dict, answers: dict, category: str) -> dict:
        task_id = str(row["id"])
        if task_id not in answers:
            raise ValueError(f"{category}: task {task_id!r} has no ground truth in the package's answer file")
        questions, gold = row["question"], answers[task_id]
        if len(questions) != len(gold):
            raise ValueError(f"{task_id}: {len(questions)} user turns but {len(gold)} gold turns")
        docs = {d["name"]: (cls, d) for cls in row["involved_classes"] for d in function_docs(cls)}
        held_out = {int(k): list(v) for k, v in (row.get("missed_function") or {}).items()}
        hidden = {n for names in held_out.values() for n in names}
        rec = {"id": task_id, "category": category, "questions": questions, "classes": list(row["involved_classes"]),
               "config": row.get("initial_config") or {}, "long_context": category == "multi_turn_long_context",
               "docs": docs, "held_out": held_out, "shown": [n for n in docs if n not in hidden], "gold_text": gold}
        try:
            rec["gold"] = [[self._gold_call(text, docs) for text in turn] for turn in gold]
        except ValueError as exc:
            self.data_errors[task_id] = str(exc)
            rec["gold"] = [[] for _ in gold]
        return rec

    @staticmethod
    def _gold_call(text: str, docs: dict) -> tuple[str, list, dict]:
        name, args, kwargs = parse_gold_call(text)
        if name not in docs:
            raise ValueError(f"gold call {text!r} names no function of the task's classes")
        return name, args, kwargs

    # ---- tasks ---------------------------------------------------------------------------------

    def _tool(self, name: str, rec: dict) -> Tool:
        cls, doc = rec["docs"][name]
        return doc_tool(cls, doc, lambda **arguments: self._model.invoke(name, arguments))

    def make_task(self, index: int) -> Task:
        if index in self._cache:
            return self._cache[index]
        rec = self.records[index]
        gold = self._named_gold(rec)
        messages = [{"role": "system", "content": self.system_prompt}] + self._user_messages(rec, 0)
        oracle = []
        for k, turn_calls in enumerate(gold):
            if turn_calls:
                oracle += [format_tool_calls(turn_calls, self.tool_format), DONE]
            else:
                oracle.append(NO_FUNCTION if (k + 1) in rec["held_out"] else ASK)
        task = Task(task_id=rec["id"], messages=messages, privileged=self._note(rec, gold, 0), oracle=oracle,
                    tools=[self._tool(n, rec) for n in rec["shown"]], gold=gold,
                    info={"category": rec["category"], "num_turns": len(gold),
                          "scored_turns": sum(1 for t in gold if t)})
        self._cache[index] = task
        return task

    def _named_gold(self, rec: dict) -> list[list[tuple[str, dict]]]:
        """The gold calls with every argument named (positional ones by the method's signature)."""
        out = []
        for turn in rec["gold"]:
            calls = []
            for name, args, kwargs in turn:
                try:
                    named = dict(zip(positional_names(rec["docs"][name][0], name, len(args)), args))
                except ValueError as exc:
                    self.data_errors.setdefault(rec["id"], str(exc))
                    named = {}
                calls.append((name, {**named, **kwargs}))
            out.append(calls)
        return out

    def _backends(self, rec: dict) -> Backends:
        validators = {n: self._tool(n, rec) for n in rec["docs"]}
        return Backends(rec["classes"], rec["config"], rec["long_context"], validators)

    def _user_messages(self, rec: dict, turn: int) -> list[dict]:
        if turn in rec["held_out"]:
            schemas = [self._tool(n, rec).to_openai() for n in rec["held_out"][turn]]
            return [{"role": "user", "content": NEW_FUNCTIONS.format(functions=json.dumps(schemas, ensure_ascii=False))}]
        return [dict(m) for m in rec["questions"][turn]]

    def _note(self, rec: dict, gold: list, turn: int) -> str:
        """The teacher's privileged context for one user turn: its gold calls, or what to do without them."""
        if gold[turn]:
            return format_tool_calls(gold[turn], self.tool_format)
        return NOTE_MISSING_FUNCTION if (turn + 1) in rec["held_out"] else NOTE_ASK

    # ---- the episode ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[list[dict], dict]:
        obs, info = super().reset(seed=seed, options=options)
        rec = self.records[info["index"]]
        self._rec = rec
        self._model = self._backends(rec)
        self._gold = self._backends(rec)
        shown = {t.name for t in self.toolbox.tools}
        hidden = [self._tool(n, rec) for n in rec["docs"] if n not in shown]
        for tool in hidden:  # runnable though not listed yet, as on the leaderboard
            tool.timeout_s, tool.max_output_chars = self.tool_timeout_s, self.max_tool_output_chars
        self.toolbox = ToolBox(self.toolbox.tools + hidden)
        self._user_turn = 0
        self._steps_in_turn = 0
        self._called = False
        self._checks: list[TurnCheck] = []
        return obs, info

    def step(self, action: str) -> tuple[list[dict], float, bool, bool, dict]:
        results, calls, errors, info = self._take_turn(action)
        info["user_turn"] = self._user_turn
        if results:
            self._called = self._called or bool(calls)
            obs = self.run_calls(results)
            self._steps_in_turn += 1
            if self._steps_in_turn >= self.max_steps_per_turn or self._turn >= self.max_turns:
                reason = FORCE_QUIT if self._steps_in_turn >= self.max_steps_per_turn else "max_turns"
                return self._end(info, 0.0, {**self._summary(), "truncated_reason": reason,
                                             "error_type": "force_terminated"}, terminated=False)
            self.messages.extend(copy.deepcopy(obs))
            return obs, 0.0, False, False, info
        self._checks.append(self._check_turn())  # a reply without a call ends the user turn
        self._user_turn += 1
        self._steps_in_turn, self._called = 0, False
        if self._user_turn == len(self.task.gold):
            reward, extra = self._score(Transcript(list(self.messages), action, calls, errors))
            return self._end(info, reward, extra, terminated=True)
        if self._turn >= self.max_turns:
            return self._end(info, 0.0, {**self._summary(), "truncated_reason": "max_turns"}, terminated=False)
        obs = self._user_messages(self._rec, self._user_turn)
        info["user_turn"] = self._user_turn
        info["privileged"] = self._note(self._rec, self.task.gold, self._user_turn)
        self.messages.extend(copy.deepcopy(obs))
        return obs, 0.0, False, False, info

    def run_calls(self, results: list[ParsedCall | ParseError]) -> list[dict]:
        obs = []
        for r in results:
            if isinstance(r, ParseError):
                obs.append({"role": "tool", "name": "error", "content": f"error: could not parse tool call: {r.message}"})
                continue
            before = len(self._model.results)
            result = self.toolbox.call(r.name, r.arguments)
            if len(self._model.results) == before:  # refused before the method ran: that text is the call's result
                self._model.results.append(result.content)
            obs.append({"role": "tool", "name": r.name, "content": result.content})
        return obs

    def _check_turn(self) -> TurnCheck:
        gold_calls = self.task.gold[self._user_turn]
        gold_results = [self._gold.call(name, args) for name, args in gold_calls]
        return check_turn(self._model, self._gold, gold_results, self._called, scored=bool(gold_calls))

    def _summary(self) -> dict:
        n = len(self.task.gold)
        passed = [c.passed for c in self._checks] + [False if self.task.gold[k] else None for k in range(len(self._checks), n)]
        out = {"category": self.task.info["category"], "turn_passed": passed,
               "turns_passed": sum(1 for p in passed if p), "turns_scored": sum(1 for p in passed if p is not None),
               "error_type": None, "check_message": ""}
        failed = next(((k, c) for k, c in enumerate(self._checks) if c.passed is False), None)
        if failed is not None:
            out["error_type"], out["check_message"] = failed[1].error_type, f"turn {failed[0]}: {failed[1].message}"
        return out

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        summary = self._summary()
        scored = summary["turns_scored"]
        all_pass = summary["turns_passed"] == scored
        if self.partial_reward:
            reward = summary["turns_passed"] / scored if scored else 1.0
        else:
            reward = 1.0 if all_pass else 0.0
        return reward, summary
