"""The environment contract: a multi-turn, tool-calling chat task with a privileged teacher context.

A subclass describes its tasks; this base class runs the episode: it parses the assistant's turn
into tool calls, executes them (errors go back to the model as tool messages), enforces the turn
limit and, when the episode ends, asks the subclass to score it.

Writing an environment takes three pieces::

    class MyEnv(ChatToolEnv):
        num_tasks = 10                       # or None for an infinite (procedural) split
        def make_task(self, index): ...      # -> Task (student messages, tools, privileged, oracle)
        def score(self, transcript): ...     # -> (reward in [0, 1], info dict)
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from pbsd_agents.tools.base import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT_S, Tool, ToolBox
from pbsd_agents.tools.parsers import FORMATS, ParsedCall, ParseError, parse_tool_calls

from .spaces import ChatMessages, FreeText

TEACHER_TEMPLATE = "{user}\n\n(Privileged context, shown to you only: {privileged})"

# Infinite splits draw task indices from this range; a task index names a task reproducibly.
INFINITE_INDEX_RANGE = 2**31

# The reset-info keys of the contract; any other key is the task's own (Task.info), recorded with its trajectories.
RESET_INFO_KEYS = ("tools", "privileged", "task_id", "index", "tool_format")
# The step-info keys of the contract; any other key of the last step's info is the env's own outcome
# (e.g. per-turn results), recorded with its trajectories. ``privileged`` here is a per-turn note.
STEP_INFO_KEYS = ("tool_calls", "parse_errors", "num_parse_errors", "turn", "success", "privileged")


@dataclass
class Task:
    """One task: what the student sees, the tools it may call, and what only the teacher sees.

    Attributes:
        gold: the env's own scoring reference (gold calls, a number, a goal database...), read only by
            the env itself (its ``score``); never shown to the model nor copied into ``info``.
        info: JSON-serialisable extras (e.g. a category) merged into the ``info`` that ``reset`` returns.
    """

    task_id: str
    messages: list[dict]
    privileged: str
    oracle: list[str]
    tools: list[Tool] = field(default_factory=list)
    gold: Any = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Transcript:
    """The episode as ``score`` sees it when it ends.

    Attributes:
        messages: the whole conversation, the final assistant turn included (tool results too).
        final_text: the final assistant turn.
        calls: the tool calls parsed from ``final_text`` (single-turn envs, or a turn that called one of
            the env's ``terminal_tools``; otherwise a multi-turn episode ends at a turn without calls).
        parse_errors: the call attempts in ``final_text`` that could not be parsed.
    """

    messages: list[dict]
    final_text: str
    calls: list[ParsedCall]
    parse_errors: list[ParseError]


class ChatToolEnv(gym.Env):
    """Base class of every ``pbsd/`` environment (see the module docstring for how to subclass).

    Args:
        split: ``"train"`` or ``"test"`` (loaders may also accept ``"dev"``).
        max_turns: assistant turns before the episode is truncated (multi-turn envs).
        tool_format: how tool calls are written: ``"hermes"`` (default), ``"json"`` or ``"python"``.
        tool_timeout_s: time limit of one tool call, seconds (``None``: no limit).
        max_tool_output_chars: tool output longer than this is cut, with a note.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}
    single_turn = False  # True: the first assistant turn's calls are the answer (function calling)
    # A call to one of these ends the episode once it has run; calls after it in the turn do not run
    # (e.g. tau-bench's hand-off to a human agent).
    terminal_tools: frozenset[str] = frozenset()
    num_tasks: int | None = None
    splits: tuple[str, ...] = ("train", "test")

    def __init__(
        self,
        split: str = "train",
        max_turns: int = 8,
        tool_format: str = "hermes",
        tool_timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_tool_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        render_mode: str | None = None,
    ):
        if split not in self.splits:
            raise ValueError(f"split must be one of {list(self.splits)}, got {split!r}")
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive int, got {max_turns!r}")
        if tool_format not in FORMATS:
            raise ValueError(f"tool_format must be one of {list(FORMATS)}, got {tool_format!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.split = split
        self.max_turns = max_turns
        self.tool_format = tool_format
        self.tool_timeout_s = tool_timeout_s
        self.max_tool_output_chars = max_tool_output_chars
        self.render_mode = render_mode
        self.observation_space = ChatMessages()
        self.action_space = FreeText()
        self._task: Task | None = None
        self._done = True
        self.messages: list[dict] = []

    # ---- what a subclass provides -------------------------------------------------------------

    def make_task(self, index: int) -> Task:
        """Build task ``index`` of ``self.split`` (deterministically: the same index, the same task)."""
        raise NotImplementedError

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        """Score the episode when it ends. Returns ``(reward in [0, 1], extra info for the last step)``."""
        raise NotImplementedError

    def teacher_messages(self, messages: list[dict], privileged: str) -> list[dict]:
        """The teacher's prompt: the student's messages with ``privileged`` appended to the first user turn."""
        out = copy.deepcopy(messages)
        for m in out:
            if m["role"] == "user":
                m["content"] = TEACHER_TEMPLATE.format(user=m["content"], privileged=privileged)
                return out
        return out + [{"role": "user", "content": TEACHER_TEMPLATE.format(user="", privileged=privileged)}]

    def oracle_actions(self) -> list[str]:
        """The assistant turns that solve the current task (tests and demonstrations only)."""
        if self._task is None:
            raise RuntimeError("call reset() before oracle_actions()")
        return list(self._task.oracle)

    # ---- the episode ---------------------------------------------------------------------------

    @property
    def task(self) -> Task:
        if self._task is None:
            raise RuntimeError("call reset() first")
        return self._task

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[list[dict], dict]:
        super().reset(seed=seed)
        index = (options or {}).get("index")
        if index is None:
            high = self.num_tasks if self.num_tasks is not None else INFINITE_INDEX_RANGE
            index = int(self.np_random.integers(high))
        elif not isinstance(index, numbers.Integral) or isinstance(index, bool) or index < 0 or (
            self.num_tasks is not None and index >= self.num_tasks
        ):
            valid = f"0..{self.num_tasks - 1}" if self.num_tasks is not None else "a non-negative int"
            raise ValueError(f"options['index'] must be {valid} for split {self.split!r}, got {index!r}")
        self._task = self.make_task(int(index))
        tools = []
        for tool in self._task.tools:
            tool = copy.copy(tool)  # the env's limits apply to this episode only, not to a shared catalog
            tool.timeout_s = self.tool_timeout_s
            tool.max_output_chars = self.max_tool_output_chars
            tools.append(tool)
        self.toolbox = ToolBox(tools)
        self._turn = 0
        self._done = False
        self.messages = copy.deepcopy(self._task.messages)
        info = {
            "tools": self.toolbox.schemas(),
            "privileged": self._task.privileged,
            "task_id": self._task.task_id,
            "index": int(index),
            "tool_format": self.tool_format,  # the env owns the call format; a renderer reads it here
        }
        for key, value in self._task.info.items():
            info.setdefault(key, copy.deepcopy(value))  # the base keys keep their meaning
        return copy.deepcopy(self._task.messages), info

    def _take_turn(self, action: str) -> tuple[list, list, list, dict[str, Any]]:
        """Check and record one assistant turn: ``(parse results, calls, parse errors, the step info's common keys)``."""
        if self._done:
            raise RuntimeError("the episode is over (or never started): call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"action must be the assistant's turn as a str, got {type(action).__name__}")
        self._turn += 1
        self.messages.append({"role": "assistant", "content": action})
        results = parse_tool_calls(action, self.tool_format)
        calls = [r for r in results if isinstance(r, ParsedCall)]
        errors = [r for r in results if isinstance(r, ParseError)]
        info: dict[str, Any] = {
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
            "parse_errors": [{"message": e.message, "span": list(e.span)} for e in errors],
            "num_parse_errors": len(errors),
            "turn": self._turn,
        }
        return results, calls, errors, info

    def step(self, action: str) -> tuple[list[dict], float, bool, bool, dict]:
        results, calls, errors, info = self._take_turn(action)
        if self.single_turn or not results:
            reward, extra = self._score(Transcript(list(self.messages), action, calls, errors))
            return self._end(info, reward, extra, terminated=True)
        obs = self.run_calls(results)
        if any(m["role"] == "tool" and m.get("name") in self.terminal_tools for m in obs):
            self.messages.extend(copy.deepcopy(obs))
            reward, extra = self._score(Transcript(list(self.messages), action, calls, errors))
            return self._end(info, reward, extra, terminated=True)
        if self._turn >= self.max_turns:
            return self._end(info, 0.0, {"truncated_reason": "max_turns"}, terminated=False)
        self.messages.extend(copy.deepcopy(obs))
        return obs, 0.0, False, False, info

    def run_calls(self, results: list[ParsedCall | ParseError]) -> list[dict]:
        """Execute the turn's calls in order; each call or parse error becomes one tool message. A call to
        one of ``terminal_tools`` is the last to run."""
        obs = []
        for r in results:
            if isinstance(r, ParseError):
                obs.append({"role": "tool", "name": "error", "content": f"error: could not parse tool call: {r.message}"})
            else:
                obs.append({"role": "tool", "name": r.name, "content": self.tool_output(r)})
                if r.name in self.terminal_tools:
                    break
        return obs

    def tool_output(self, call: ParsedCall) -> str:
        """The text the model reads back for one parsed call (an env may word unknown tools its own way)."""
        return self.toolbox.call(call.name, call.arguments).content

    def _score(self, transcript: Transcript) -> tuple[float, dict]:
        out = self.score(transcript)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], numbers.Real) and isinstance(out[1], dict)):
            raise TypeError(f"{type(self).__name__}.score() must return (reward, info), got {_short(out)}")
        return out

    def _end(self, info: dict, reward: float, extra: dict, terminated: bool):
        self._done = True
        reward = float(min(1.0, max(0.0, reward)))
        info.update(extra)
        info["success"] = reward >= 1.0
        return [], reward, terminated, not terminated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{m['role']}] {m['content']}" for m in self.messages)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
