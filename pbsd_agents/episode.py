"""Episodes: play (or replay) one environment episode into a conversation with both views.

Everything that runs an env turn by turn goes through :class:`Episode`: the rollout collector
(turns sampled from a model), the trajectory invariants (a trajectory's turns replayed), the env
test kit, the default model's build and the benchmarks (the oracle's turns). It resets the env,
builds the student messages and the teacher's (``env.unwrapped.teacher_messages``), sends each
assistant turn to the env, and keeps the outcome. No torch here.

Privileged context may also arrive per turn (multi-turn benchmarks whose user turns each have their
own gold): a step whose ``info`` carries ``privileged`` brings a new user turn, and the teacher's
copy of that step's messages is ``env.unwrapped.teacher_messages(obs, info["privileged"])``; the
student's copy is ``obs`` as is. Everything else is added to both views alike.

Example:
    >>> import gymnasium
    >>> import pbsd_agents  # registers the pbsd/ envs
    >>> ep = play_oracle(gymnasium.make("pbsd/MathCalc-v0"), options={"index": 0})
    >>> ep.done, ep.success, ep.turns == len(ep.conversation.assistant_turns())
    (True, True, True)
    >>> [m["role"] for m in ep.conversation.student_messages][:4]
    ['system', 'user', 'assistant', 'tool']
    >>> ep.privileged in ep.conversation.teacher_messages[1]["content"]
    True
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pbsd_agents.envs.base import RESET_INFO_KEYS, STEP_INFO_KEYS

__all__ = ["Conversation", "Episode", "play", "play_oracle"]

VIEWS = ("student", "teacher")


@dataclass
class Conversation:
    """The messages behind a trajectory, in both views, with the tools and call format of its env.

    The two views differ in the prompt and, with per-turn privileged context, in the teacher's copies
    of later user turns; assistant turns and every other environment message are added to both.
    """

    student_messages: list[dict]
    teacher_messages: list[dict]
    tools: list[dict] = field(default_factory=list)
    tool_format: str = "hermes"

    def messages(self, view: str) -> list[dict]:
        if view not in VIEWS:
            raise ValueError(f"view must be 'student' or 'teacher', got {view!r}")
        return self.student_messages if view == "student" else self.teacher_messages

    def add(self, messages: Iterable[dict], teacher: Iterable[dict] | None = None) -> None:
        """Append ``messages`` (copied) to both views, or ``teacher`` in their place to the teacher's."""
        messages = list(messages)
        self.student_messages.extend(copy.deepcopy(messages))
        self.teacher_messages.extend(copy.deepcopy(list(teacher) if teacher is not None else messages))

    def assistant_turns(self) -> list[str]:
        return [m["content"] for m in self.student_messages if m.get("role") == "assistant"]


class Episode:
    """One episode of ``env``, reset on construction and advanced one assistant turn at a time.

    Args:
        env: a gymnasium env following the kit's contract (reset info has ``privileged``, ``tools``...).
        seed, options: passed to ``env.reset`` (``options={"index": i}`` picks task i).

    Attributes:
        conversation: the :class:`Conversation` so far (both views).
        privileged: the reset's privileged text; ``turn_privileged``: the ones later steps brought, in order.
        outcome: the env's own keys of the last step's ``info`` (outside ``STEP_INFO_KEYS``, JSON values
            only), e.g. per-turn results; empty until the episode ends.
        info: the reset info; ``task_info`` is its env-specific part (e.g. a BFCL category: the
            keys outside the contract's ``RESET_INFO_KEYS``; JSON values, they go into the trajectory).
        turns, reward, success, truncated, done, parse_errors: the outcome so far.
        last_step: the env's last ``step()`` result ``(obs, reward, terminated, truncated, info)``.
    """

    def __init__(self, env, *, seed: int | None = None, options: dict | None = None):
        self.env = env
        obs, info = env.reset(seed=seed, options=options)
        self.info: dict = info
        self.privileged = str(info.get("privileged", "") or "")
        self.task_id = str(info.get("task_id", ""))
        self.index: int | None = info.get("index")
        student = copy.deepcopy(list(obs))
        teacher = copy.deepcopy(list(env.unwrapped.teacher_messages(copy.deepcopy(list(obs)), self.privileged)))
        self.conversation = Conversation(student, teacher, list(info.get("tools") or []),
                                         str(info.get("tool_format") or getattr(env.unwrapped, "tool_format", "hermes")))
        self.turn_privileged: list[str] = []
        self._note: str | None = None  # the privileged text of the user turn the last step brought
        self.outcome: dict[str, Any] = {}
        self.turns = 0
        self.parse_errors = 0
        self.reward = 0.0
        self.success = False
        self.truncated = False
        self.done = False
        self.last_step: tuple | None = None

    @property
    def task_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.info.items() if k not in RESET_INFO_KEYS}

    @property
    def privileged_texts(self) -> list[str]:
        """Every privileged text of the episode so far (the reset's first), empty ones left out."""
        return [p for p in [self.privileged, *self.turn_privileged] if p]

    def privileged_in_student_view(self) -> bool:
        """True when a privileged text shows in the student's messages (a broken env)."""
        return any(p in str(m.get("content", "")) for p in self.privileged_texts for m in self.conversation.student_messages)

    def teacher_observation(self, messages: list[dict]) -> list[dict]:
        """The teacher's copy of the env's new ``messages``: with the privileged text of the user turn
        they start, when the last step brought one; else ``messages`` themselves."""
        if not self._note:
            return list(messages)
        return list(self.env.unwrapped.teacher_messages(copy.deepcopy(list(messages)), self._note))

    def step(self, text: str) -> list[dict]:
        """Send one finished assistant turn; return the env's new messages.

        The turn is added to the conversation; the new messages are not (call :meth:`observe` to add
        them: the collector leaves them out when its token budget ends the episode first).
        """
        if self.done:
            raise RuntimeError("the episode is over")
        self.last_step = None  # stays None when step() raises
        self.last_step = self.env.step(text)
        obs, reward, terminated, truncated, info = self.last_step
        self.turns += 1
        self.parse_errors += int(info.get("num_parse_errors", 0) or 0)
        self.conversation.add([{"role": "assistant", "content": text}])
        self._note = None
        if terminated or truncated:
            self.reward = float(reward)
            self.success = bool(info.get("success", reward >= 1.0))
            self.truncated = bool(truncated) and not terminated
            self.done = True
            self.outcome = _json_only({k: v for k, v in info.items() if k not in STEP_INFO_KEYS})
        elif isinstance(info.get("privileged"), str) and info["privileged"]:
            note = info["privileged"]
            if any(note in str(m.get("content", "")) for m in obs):
                raise ValueError(f"task {self.task_id!r}: the privileged text of turn {self.turns} shows in the "
                                 "student's messages")
            self.turn_privileged.append(note)
            self._note = note
        return list(obs)

    def observe(self, messages: Iterable[dict]) -> None:
        """Add the env's new messages to the conversation (the teacher's view gets
        :meth:`teacher_observation` of them)."""
        messages = list(messages)
        teacher = self.teacher_observation(messages) if self._note else None
        self._note = None
        self.conversation.add(messages, teacher)

    def cut(self, *, unfinished_turn: bool = False) -> None:
        """End the episode from outside (a turn or token limit): truncated, reward 0.
        ``unfinished_turn``: a turn was generated but never finished (it counts in ``turns``)."""
        self.turns += int(unfinished_turn)
        self.truncated, self.done = True, True

    def play(self, turns: Iterable[str] | Callable[["Episode"], str | None], *, max_turns: int | None = None) -> "Episode":
        """Play on to the end: ``turns`` is a list of assistant turns, or a function of the episode
        that returns the next turn (``None`` stops). Stops when the env ends the episode, the turns
        run out, or ``max_turns`` is reached (the episode is then cut). Returns ``self``.
        """
        nxt = turns if callable(turns) else (lambda it: lambda ep: next(it, None))(iter(list(turns)))
        while not self.done:
            if max_turns is not None and self.turns >= max_turns:
                self.cut()
                break
            text = nxt(self)
            if text is None:
                break
            obs = self.step(text)
            if not self.done:
                self.observe(obs)
        return self


def _json_only(values: dict) -> dict:
    """The items of ``values`` that JSON can write (the rest is dropped, not stringified)."""
    out = {}
    for k, v in values.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out


def play(env, turns: Iterable[str] | Callable[[Episode], str | None], *, seed: int | None = None,
         options: dict | None = None, max_turns: int | None = None) -> Episode:
    """Reset ``env`` and play one episode (see :meth:`Episode.play`)."""
    return Episode(env, seed=seed, options=options).play(turns, max_turns=max_turns)


def play_oracle(env, *, seed: int | None = None, options: dict | None = None) -> Episode:
    """Reset ``env`` and play the task's oracle turns (``env.unwrapped.oracle_actions()``)."""
    ep = Episode(env, seed=seed, options=options)
    return ep.play(env.unwrapped.oracle_actions())
