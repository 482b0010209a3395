"""``pbsd/TauRetail-v0``: tau-bench's retail tasks on its database, scored as tau-bench scores them.

``data_dir`` is a clone of tau-bench (its own layout) or a flat folder (see :mod:`.tau_data`). The
tools (:mod:`.tau_retail_db`) change the database and answer exactly as tau-bench's do, and the
episode is scored by tau-bench's rule: the gold ``actions`` are replayed on a fresh database, and the
episode scores 1 when the agent's final database equals that one (compared like tau-bench's hash) and
every string of ``outputs`` occurs (case and commas ignored) in the agent's replies to the user.

There is no user simulator: the task's ``instruction`` is the user's opening message, and the
episode ends, as with a tau-bench user who leaves at the first reply, at the first assistant turn
without a tool call (that turn is the reply searched for the outputs), or, as in tau-bench, right
after a call to ``transfer_to_human_agents``.

Kept differences from tau-bench, by design: arguments are checked against the tool's JSON Schema
before the call (tau-bench runs the call and fails inside it). A call that fits the schema gets
tau-bench's state, output and reward; one that breaks it is refused with this kit's error and changes
nothing, where tau-bench would fail too, except for wrongly typed values it stores as given (an
address with a numeric ``zip``): ``check_arguments=False`` turns the check off for exact parity.
Calls that cannot be parsed are reported as this kit reports them; the policy gets a note that the
user cannot reply.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from pbsd_agents.tools.base import Tool
from pbsd_agents.tools.parsers import ParsedCall, format_tool_call

from .base import ChatToolEnv, Task, Transcript
from .tau_data import locate, load_tables, load_tasks, tool_schemas
from .tau_retail_db import TERMINAL_TOOLS, TOOL_SPECS, RetailDB, arithmetic

__all__ = ["NO_USER_NOTE", "RetailDB", "TauRetailEnv", "arithmetic", "load_database"]

NO_USER_NOTE = (
    "\n\n## This conversation\n\n"
    "- The user cannot reply: their first message is their whole request, and it counts as their "
    "explicit confirmation of the actions it asks for. Make one tool call per turn. Your first reply "
    "without a tool call ends the conversation, so make every change first."
)
# tau-bench shows tool output whole; the largest record of its database is ~3,400 characters.
MAX_OUTPUT_CHARS = 100_000


def load_database(data_dir: str) -> dict[str, dict]:
    """The shared, read-only tables ``users``, ``orders``, ``products`` of ``data_dir`` (either layout; cached)."""
    return load_tables(locate(data_dir))


class TauRetailEnv(ChatToolEnv):
    """tau-bench retail tasks on the real database (``pbsd/TauRetail-v0``).

    Args:
        data_dir: a clone of ``github.com/sierra-research/tau-bench`` (or its ``tau_bench/envs/retail``
            folder), or a flat folder (:mod:`~pbsd_agents.envs.tau_data`). Required: the kit ships no data.
        split: ``"train"``, ``"dev"`` or ``"test"`` (tau-bench's ``tasks_<split>``).
        max_turns: assistant turns before truncation (default 30, tau-bench's step limit).
        check_arguments: check arguments against the tool's JSON Schema before the call (default True, the
            kit's rule); False passes them to the tool unchecked, exactly as tau-bench does.
        first_call_only: run only the first call of a turn, as tau-bench's tool-calling agent does (default
            False: every call of a turn runs, as in every env of this kit; the policy asks for one a turn).
        Other arguments as in :class:`ChatToolEnv` (``max_tool_output_chars`` defaults to 100,000 here,
        so no record is cut).

    Example:
        >>> import gymnasium as gym
        >>> import pbsd_agents.envs
        >>> gym.make("pbsd/TauRetail-v0")
        Traceback (most recent call last):
        ...
        ValueError: TauRetailEnv needs data_dir=: a clone of github.com/sierra-research/tau-bench ...
        >>> env = gym.make("pbsd/TauRetail-v0", data_dir="tau-bench", split="dev").unwrapped  # doctest: +SKIP
        >>> obs, info = env.reset(options={"index": 0})  # doctest: +SKIP
        >>> for turn in env.oracle_actions():  # doctest: +SKIP
        ...     obs, reward, terminated, truncated, info = env.step(turn)
        >>> reward, info["success"]  # doctest: +SKIP
        (1.0, True)
    """

    splits = ("train", "dev", "test")
    terminal_tools = TERMINAL_TOOLS

    def __init__(self, data_dir: str | None = None, split: str = "train", max_turns: int = 30, *,
                 check_arguments: bool = True, first_call_only: bool = False, **kwargs: Any):
        kwargs.setdefault("max_tool_output_chars", MAX_OUTPUT_CHARS)
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        if not isinstance(check_arguments, bool):
            raise ValueError(f"check_arguments must be True or False, got {check_arguments!r}")
        if not isinstance(first_call_only, bool):
            raise ValueError(f"first_call_only must be True or False, got {first_call_only!r}")
        self.check_arguments = check_arguments
        self.first_call_only = first_call_only
        files = locate(data_dir)
        self.data_dir = str(data_dir)
        self.layout = files.layout
        self.tasks: list[dict] = load_tasks(files, split, data_dir)
        with open(files.wiki, encoding="utf-8") as f:
            self.system_prompt = f.read().rstrip() + NO_USER_NOTE
        self.base_db = load_tables(files)
        self.num_tasks = len(self.tasks)
        self.db: RetailDB | None = None
        self._gold: dict[int, RetailDB] = {}
        self.tools = self._make_tools(tool_schemas(files))

    def _make_tools(self, on_disk: dict[str, dict]) -> list[Tool]:
        unknown = sorted(set(on_disk) - {name for name, _, _ in TOOL_SPECS})
        if unknown:
            raise ValueError(f"{self.data_dir}: tool schemas name {unknown}, which have no implementation; "
                             f"known: {[name for name, _, _ in TOOL_SPECS]}")
        tools = []
        for name, description, parameters in TOOL_SPECS:
            if name in on_disk:  # the benchmark's own wording, which its users' models see
                spec = on_disk[name].get("function", on_disk[name])
                description, parameters = spec.get("description", ""), spec["parameters"]
            # The callable reads the env's current episode database, so one set of tools serves all episodes.
            tools.append(Tool(name, description, parameters, functools.partial(self._run_tool, name),
                              check_arguments=self.check_arguments))
        return tools

    def _run_tool(self, name: str, /, **arguments: Any) -> str:
        if self.db is None:
            return "Error: no episode is running"
        return self.db.invoke(name, **arguments)

    def run_calls(self, results: list) -> list[dict]:
        return super().run_calls(results[:1] if self.first_call_only else results)

    def tool_output(self, call: ParsedCall) -> str:
        if call.name not in self.toolbox.by_name:
            return f"Unknown action {call.name}"  # tau-bench's words
        return super().tool_output(call)

    def gold_db(self, index: int) -> RetailDB:
        """A fresh database with task ``index``'s gold actions replayed on it, as tau-bench replays them
        (a failing action changes what it changed before failing; a hand-off to a human is skipped)."""
        if index not in self._gold:
            db = RetailDB(self.base_db)
            for action in self.tasks[index]["actions"]:
                if action["name"] not in TERMINAL_TOOLS:
                    db.invoke(action["name"], **action["kwargs"])
            self._gold[index] = db
        return self._gold[index]

    def gold_errors(self, index: int) -> list[str]:
        """The errors the gold actions of task ``index`` produce (data checks)."""
        db, errors = RetailDB(self.base_db), []
        for action in self.tasks[index]["actions"]:
            out = db.invoke(action["name"], **action["kwargs"])
            if out.startswith(("Error:", "Unknown action")):
                errors.append(f"{action['name']}: {out}")
        return errors

    def make_task(self, index: int) -> Task:
        raw = self.tasks[index]
        # The gold calls, a hand-off to a human last (it ends the episode), else a reply that says the outputs.
        calls = [(a["name"], a["kwargs"]) for a in raw["actions"] if a["name"] not in TERMINAL_TOOLS]
        handoff = [(a["name"], a["kwargs"]) for a in raw["actions"] if a["name"] in TERMINAL_TOOLS][:1]
        outputs = list(raw["outputs"])
        turns = [format_tool_call(n, a, self.tool_format) for n, a in calls + handoff]
        final = [] if handoff else ["Your request has been handled." + "".join(f" {o}" for o in outputs)]
        return Task(
            task_id=f"tau-retail-{self.split}-{index}",
            messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": raw["instruction"]}],
            privileged="\n".join(turns) or "(no database change is needed)",
            oracle=turns + final,
            tools=self.tools,
            gold={"index": index, "outputs": outputs},  # the gold database is replayed from the task's actions
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self.db = RetailDB(self.base_db)
        return obs, info

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        state_ok = self.db.same_state(self.gold_db(self.task.gold["index"]))
        # tau-bench searches the agent's replies to the user, not its tool calls; here the one reply is
        # the final turn, when it has no call (an episode ended by a hand-off has none).
        reply = "" if transcript.calls or transcript.parse_errors else transcript.final_text.lower().replace(",", "")
        missing = [o for o in self.task.gold["outputs"] if o.lower() not in reply]
        ok = state_ok and not missing
        return (1.0 if ok else 0.0), {"database_match": state_ok, "missing_outputs": missing}
