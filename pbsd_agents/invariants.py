"""Invariants of trajectories, and the re-rendering (drift) check of a chat template.

The invariants of the trajectory format, each checked here and by the tests:

- **mask**: in both views the action mask is 1 on exactly the sampled ids and 0 on every prompt and
  observation id; every action has one finite log-probability <= 0 per id; every action but the
  last ends with a stop token, and a last action without one belongs to a truncated trajectory.
- **privileged**: no privileged text (the prompt's, nor any that arrived with a later user turn),
  nor its token ids as a contiguous run, occurs in the student view's prompt or observation tokens
  (a student may generate it: actions are not checked); the teacher's copy of an observation holds
  the privileged text of the turn it brings.
- **alignment**: the teacher and student views share their segments, so action positions align;
  an observation has a teacher copy only where it differs, and only for turns that brought
  privileged text.
- **render**: given the conversation behind a trajectory (from the collector, or rebuilt by
  replaying the actions in the environment), rendering it with the chat template gives the
  trajectory's ids. Prompt and observation ids must match exactly. Action ids may differ from the
  tokenizer's encoding of their text (the model sampled a non-canonical split): that is counted as
  re-tokenization drift, not a violation. A template whose one-shot rendering differs from the
  turn-by-turn one is reported as template drift (:func:`template_drift`, callable on any tokenizer).

Example:
    >>> from pbsd_agents.trajectory import Segment, Trajectory
    >>> t = Trajectory(env_id="e", task_id="t", source="student", privileged="",
    ...                student_prompt_ids=[1], teacher_prompt_ids=[1, 2],
    ...                segments=[Segment("action", [5, 9], [-0.5, -0.1])])
    >>> check_trajectory(t, stop_ids=[9])
    []
    >>> t.segments[0].logprobs = [-0.5, 0.3]
    >>> [str(v) for v in check_trajectory(t, stop_ids=[9])]
    ['mask: action segment 0 has a log-probability > 0 (0.3)']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .trajectory import Trajectory

__all__ = [
    "CheckReport",
    "DriftReport",
    "Violation",
    "check_jsonl",
    "check_trajectory",
    "compare_render",
    "replay_conversation",
    "template_drift",
]


@dataclass
class Violation:
    """One broken invariant: which check (``mask``, ``privileged``, ``alignment``, ``render``, ``record``) and why."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


def _as_renderer(tok_or_renderer):
    if tok_or_renderer is None:
        return None
    from .chat import ChatRenderer

    return tok_or_renderer if isinstance(tok_or_renderer, ChatRenderer) else ChatRenderer(tok_or_renderer)


def _contains_run(haystack: Sequence[int], needle: Sequence[int]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    first = needle[0]
    return any(haystack[i] == first and list(haystack[i:i + n]) == list(needle) for i in range(len(haystack) - n + 1))


# ---- one trajectory ----------------------------------------------------------------------------


def check_trajectory(traj: Trajectory, renderer=None, *, conversation=None, stop_ids: Sequence[int] | None = None) -> list[Violation]:
    """Every invariant of the module docstring that can be checked for ``traj``.

    Args:
        renderer: a :class:`~pbsd_agents.chat.ChatRenderer` or a tokenizer (needed for the privileged,
            stop-token and render checks; without it only mask and alignment are checked).
        conversation: the :class:`~pbsd_agents.episode.Conversation` behind ``traj`` (from
            ``Collector.collect_with_conversations`` or :func:`replay_conversation`) for the render check.
        stop_ids: stop ids when no renderer is given.
    """
    renderer = _as_renderer(renderer)
    stops = set(stop_ids if stop_ids is not None else (renderer.stop_ids if renderer else ()))
    out: list[Violation] = []
    out += _check_masks(traj, stops)
    out += _check_alignment(traj)
    if renderer is not None and traj.privileged_texts:
        out += _check_privileged(traj, renderer)
    if renderer is not None and conversation is not None:
        cmp = compare_render(traj, conversation, renderer)
        out += cmp.violations
    return out


def _check_masks(traj: Trajectory, stops: set) -> list[Violation]:
    out = []
    actions = [s for s in traj.segments if s.kind == "action"]
    for which, prompt in (("student", traj.student_prompt_ids), ("teacher", traj.teacher_prompt_ids)):
        ids, mask = traj.view(which)
        expected = [0] * len(prompt)
        for seg in traj.segments:
            expected += [1 if seg.kind == "action" else 0] * len(traj.segment_ids(seg, which))
        if len(mask) != len(ids) or mask != expected:
            out.append(Violation("mask", f"{which} view: the action mask is not 1 on exactly the action ids"))
        if sum(mask) != traj.num_action_tokens:
            out.append(Violation("mask", f"{which} view: {sum(mask)} masked positions for {traj.num_action_tokens} action ids"))
    for k, seg in enumerate(actions):
        if not seg.ids:
            out.append(Violation("mask", f"action segment {k} is empty"))
        if seg.logprobs is None or len(seg.logprobs) != len(seg.ids):
            out.append(Violation("mask", f"action segment {k} has no log-probability for each id"))
        else:
            bad = [lp for lp in seg.logprobs if not (isinstance(lp, (int, float)) and math.isfinite(lp))]
            if bad:
                out.append(Violation("mask", f"action segment {k} has non-finite log-probabilities"))
            elif max(seg.logprobs, default=0.0) > 1e-5:
                out.append(Violation("mask", f"action segment {k} has a log-probability > 0 ({max(seg.logprobs):.3g})"))
        if stops and seg.ids:
            inner = [i for i, t in enumerate(seg.ids[:-1]) if t in stops]
            if inner:
                out.append(Violation("mask", f"action segment {k} continues after a stop token (position {inner[0]})"))
            if seg.ids[-1] not in stops and (k < len(actions) - 1 or not traj.truncated):
                out.append(Violation("mask", f"action segment {k} does not end with a stop token"
                                     + ("" if k < len(actions) - 1 else " and the trajectory is not marked truncated")))
    for k, seg in enumerate(traj.segments):
        if seg.kind == "observation" and (k == 0 or traj.segments[k - 1].kind != "action"):
            out.append(Violation("mask", f"segment {k}: an observation must follow an action"))
    return out


def _check_alignment(traj: Trajectory) -> list[Violation]:
    s_ids, s_mask = traj.student_view()
    t_ids, t_mask = traj.teacher_view()
    ns, nt = len(traj.student_prompt_ids), len(traj.teacher_prompt_ids)
    out = []
    # Taking each observation's student copy in the teacher view must give the student view's segments.
    shared = [i for seg in traj.segments for i in seg.ids]
    if s_ids[ns:] != shared or [i for seg in traj.segments for i in traj.segment_ids(seg, "teacher")] != t_ids[nt:]:
        out.append(Violation("alignment", "the student and teacher views do not share their segments"))
    elif [m for seg in traj.segments for m in [int(seg.kind == "action")] * len(seg.ids)] != s_mask[ns:] or \
            [m for seg in traj.segments for m in [int(seg.kind == "action")] * len(traj.segment_ids(seg, "teacher"))] != t_mask[nt:]:
        out.append(Violation("alignment", "the action positions of the two views do not align segment by segment"))
    copies = [k for k, seg in enumerate(traj.segments) if seg.teacher_ids is not None]
    for k in copies:
        if traj.segments[k].teacher_ids == traj.segments[k].ids:
            out.append(Violation("alignment", f"segment {k} records a teacher copy equal to the student's"))
    if len(copies) > len(traj.turn_privileged):
        out.append(Violation("alignment", f"{len(copies)} observation(s) have a teacher copy, but only "
                                          f"{len(traj.turn_privileged)} turn(s) brought privileged text"))
    return out


def _check_privileged(traj: Trajectory, renderer) -> list[Violation]:
    out = []
    parts = [("student prompt", traj.student_prompt_ids)]
    parts += [(f"observation segment {k}", s.ids) for k, s in enumerate(traj.segments) if s.kind == "observation"]
    decoded = [(name, ids, renderer.decode(ids)) for name, ids in parts]
    for n, text in enumerate(traj.privileged_texts):
        which = "privileged text" if n == 0 and text == traj.privileged else "privileged text of a later turn"
        runs = [r for r in (renderer.encode(text), renderer.encode(" " + text)) if r]
        for name, ids, shown in decoded:
            if text in shown:
                out.append(Violation("privileged", f"the {which} occurs in the {name}"))
            elif any(_contains_run(ids, r) for r in runs):
                out.append(Violation("privileged", f"the {which}'s token ids occur in the {name}"))
    copies = [(k, s) for k, s in enumerate(traj.segments) if s.teacher_ids is not None]
    for (k, seg), note in zip(copies, traj.turn_privileged):
        if note not in renderer.decode(seg.teacher_ids):
            out.append(Violation("privileged", f"the teacher's copy of observation segment {k} lacks its turn's privileged text"))
    return out


# ---- re-rendering ------------------------------------------------------------------------------


@dataclass
class RenderComparison:
    """How a trajectory compares with the chat template's rendering of its conversation."""

    violations: list[Violation] = field(default_factory=list)
    action_segments: int = 0
    action_retokenized: int = 0  # actions whose sampled ids differ from encode(text) + stop
    template_exact: dict = field(default_factory=dict)  # view -> one-shot rendering == turn-by-turn ids
    exact: dict = field(default_factory=dict)  # view -> one-shot rendering == the trajectory's own ids


def compare_render(traj: Trajectory, conversation, renderer) -> RenderComparison:
    """Re-render ``conversation`` (both views) and compare with ``traj`` (see the module docstring)."""
    renderer = _as_renderer(renderer)
    res = RenderComparison()
    actions = [s for s in traj.segments if s.kind == "action"]
    res.action_segments = len(actions)
    for k, seg in enumerate(actions):
        canonical = renderer.encode(seg.text)
        finished = bool(seg.ids) and seg.ids[-1] in renderer.stop_ids
        # the template closes a turn with eot_id: a turn ended by another stop id (eos) re-renders differently
        if (canonical + [renderer.eot_id] if finished else canonical) != seg.ids:
            res.action_retokenized += 1
    last_finished = not actions or (bool(actions[-1].ids) and actions[-1].ids[-1] in renderer.stop_ids)
    for view in ("student", "teacher"):
        msgs = list(conversation.messages(view))
        tools, fmt = conversation.tools, conversation.tool_format
        canon = renderer.conversation_segments(msgs, tools, tool_format=fmt)
        canon_ids = [i for _, ids in canon for i in ids]
        ends_with_assistant = bool(msgs) and msgs[-1].get("role") == "assistant"
        one_shot = renderer.render_ids(msgs, tools, add_generation_prompt=not ends_with_assistant, tool_format=fmt)
        tail = renderer._after_eot(one_shot) if ends_with_assistant else []
        res.template_exact[view] = one_shot == canon_ids + tail
        # the trajectory's prompt and observations must be exactly the turn-by-turn ones
        prompt = traj.student_prompt_ids if view == "student" else traj.teacher_prompt_ids
        if canon[0][1] != prompt:
            res.violations.append(Violation("render", f"{view} prompt ids differ from the template's rendering of the messages"))
        obs_traj = [traj.segment_ids(s, view) for s in traj.segments if s.kind == "observation"]
        obs_canon = [ids for kind, ids in canon if kind == "observation"]
        if obs_traj != obs_canon:
            res.violations.append(Violation(
                "render", f"{view} observation ids differ from the template's delta ({len(obs_traj)} observation "
                          f"segments in the trajectory, {len(obs_canon)} from the conversation)"))
        n_assist = sum(1 for m in msgs if m.get("role") == "assistant")
        finished_actions = len(actions) if last_finished else len(actions) - 1
        if n_assist != finished_actions:
            res.violations.append(Violation("render", f"{view} conversation has {n_assist} assistant turns, "
                                                      f"the trajectory {finished_actions} finished ones"))
        ids, _ = traj.view(view)
        if not last_finished:  # an unfinished last turn is not part of the conversation
            ids = ids[: len(ids) - len(actions[-1].ids)]
        res.exact[view] = one_shot == ids + tail
    if not all(res.template_exact.values()):
        bad = [v for v, ok in res.template_exact.items() if not ok]
        res.violations.append(Violation("render", f"template drift: the one-shot rendering differs from the turn-by-turn ids ({', '.join(bad)} view)"))
    return res


def replay_conversation(traj: Trajectory, stop_ids: Sequence[int], env=None, *, env_kwargs: dict | None = None):
    """Rebuild the :class:`~pbsd_agents.episode.Conversation` behind ``traj`` by resetting its
    environment to the same task and replaying its finished actions (each segment's ``text``).

    ``stop_ids`` tells finished turns (sent to the environment) from an unfinished last one (never sent).
    ``env`` defaults to ``make_env(traj.env_id, **env_kwargs)``; pass the same ``env_kwargs``
    (``split``, ``tool_format``...) the trajectory was collected with. Raises ``ValueError`` when the
    task cannot be reproduced (no index, or another task id comes back).
    """
    from .episode import Episode

    if traj.index is None:
        raise ValueError(f"trajectory {traj.task_id!r} has no task index; it cannot be replayed")
    if env is None:
        from pbsd_agents.envs.registry import make_env

        env = make_env(traj.env_id, **(env_kwargs or {}))
    episode = Episode(env, options={"index": traj.index})
    if episode.task_id != traj.task_id:
        raise ValueError(f"replaying index {traj.index} of {traj.env_id} gave task {episode.task_id!r}, "
                         f"not {traj.task_id!r} (pass the env_kwargs, e.g. split, it was collected with)")
    stops = set(stop_ids)
    segs = traj.segments
    for k, seg in enumerate(segs):
        if seg.kind != "action":
            continue
        if not seg.ids or seg.ids[-1] not in stops or episode.done:
            break  # an unfinished turn never reached the environment
        obs = episode.step(seg.text)
        if k + 1 < len(segs) and segs[k + 1].kind == "observation":
            episode.observe(obs)
    return episode.conversation


# ---- files -------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """What :func:`check_jsonl` found. ``ok`` is True when no invariant is broken."""

    path: str
    trajectories: int = 0
    violations: list[tuple[int, Violation]] = field(default_factory=list)  # (line number, violation)
    render_checked: int = 0
    render_skipped: list[str] = field(default_factory=list)
    exact: int = 0  # trajectories (student view) whose one-shot rendering equals their ids
    action_segments: int = 0
    action_retokenized: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        lines = [f"{self.path}: {self.trajectories} trajectories, {len(self.violations)} violation(s)"]
        lines += [f"  line {n}: {v}" for n, v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"  ... and {len(self.violations) - 20} more")
        if self.render_checked:
            rate = self.action_retokenized / max(1, self.action_segments)
            lines.append(f"  re-rendered {self.render_checked}: {self.exact} identical to the template's rendering; "
                         f"{self.action_retokenized}/{self.action_segments} action turns ({rate:.1%}) sampled a "
                         "non-canonical tokenization (re-tokenization drift, expected for sampled ids)")
        if self.render_skipped:
            lines.append(f"  render check skipped for {len(self.render_skipped)}: {self.render_skipped[0]}")
        return "\n".join(lines)


def check_jsonl(path: str | Path, tokenizer, *, replay: bool = True, env_kwargs: dict | None = None) -> CheckReport:
    """Check every trajectory in a JSON-lines file (``pbsd-agents rollout`` output) against the invariants.

    Args:
        tokenizer: the tokenizer (or :class:`~pbsd_agents.chat.ChatRenderer`) the file was made with.
        replay: rebuild each conversation by replaying it in its environment (when its env id is
            registered and the task index is known) and run the render check too.
        env_kwargs: the environment arguments the file was collected with (``split``...), for the replay.
    """
    renderer = _as_renderer(tokenizer)
    report = CheckReport(str(path))
    envs: dict[str, Any] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.trajectories += 1
            try:
                record = json.loads(line)
                traj = Trajectory.from_dict(record)
            except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
                report.violations.append((lineno, Violation("record", f"not a valid trajectory record: {exc}")))
                continue
            conv = None
            if replay:
                conv = _replay_for_check(traj, envs, env_kwargs, renderer, report, lineno)
            for v in check_trajectory(traj, renderer):
                report.violations.append((lineno, v))
            if conv is not None:
                cmp = compare_render(traj, conv, renderer)
                report.render_checked += 1
                report.exact += int(cmp.exact.get("student", False))
                report.action_segments += cmp.action_segments
                report.action_retokenized += cmp.action_retokenized
                report.violations += [(lineno, v) for v in cmp.violations]
    return report


def _replay_for_check(traj, envs, env_kwargs, renderer, report, lineno):
    from pbsd_agents.envs.registry import make_env

    if traj.env_id not in envs:
        try:
            envs[traj.env_id] = make_env(traj.env_id, **(env_kwargs or {}))
        except ValueError as exc:
            report.render_skipped.append(f"line {lineno}: {exc}")
            return None
    try:
        return replay_conversation(traj, renderer.stop_ids, envs[traj.env_id])
    except ValueError as exc:
        report.render_skipped.append(f"line {lineno}: {exc}")
        return None


# ---- the template on its own -------------------------------------------------------------------


@dataclass
class DriftReport:
    """Per-template result of :func:`template_drift`."""

    template: dict
    conversations: int = 0
    exact: int = 0
    mismatches: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exact == self.conversations and not self.errors

    def summary(self) -> str:
        head = (f"template {self.template.get('tokenizer') or '?'} (eot {self.template.get('eot_token')!r}, "
                f"tools in template: {self.template.get('template_has_tools')}): "
                f"{self.exact}/{self.conversations} conversations render turn by turn exactly as in one go")
        lines = [head] + [f"  #{m['index']} at token {m['position']}: one-shot {m['one_shot']!r} vs turn-by-turn "
                          f"{m['turn_by_turn']!r}" for m in self.mismatches[:10]]
        lines += [f"  error: {e}" for e in self.errors[:10]]
        return "\n".join(lines)


def template_drift(tokenizer, conversations: Iterable) -> DriftReport:
    """Does the chat template render each conversation turn by turn exactly as in one go?

    For each conversation the ids are built as the collector builds them (prompt; per assistant turn
    the canonical ids ``encode(content) + eot``; the observation delta) and compared with the
    one-shot rendering of the whole conversation. A mismatch is drift caused by the template
    itself (a token merging across a turn boundary, a turn rendered differently once followed by
    others), independent of the model. Re-tokenization drift of sampled ids is measured per
    trajectory by :func:`compare_render` / :func:`check_jsonl`.

    Args:
        tokenizer: any tokenizer with a chat template, or a :class:`~pbsd_agents.chat.ChatRenderer`.
        conversations: message lists, ``{"messages": [...], "tools": [...]}`` dicts, or
            :class:`~pbsd_agents.episode.Conversation` objects (both views are checked).

    Example:
        >>> from pbsd_agents.loading import byte_tokenizer
        >>> conv = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "<tool_call>...</tool_call>"},
        ...         {"role": "tool", "content": "result = 5"}, {"role": "assistant", "content": "5"}]
        >>> template_drift(byte_tokenizer(), [conv]).ok
        True
    """
    renderer = _as_renderer(tokenizer)
    report = DriftReport(renderer.describe())
    items: list[tuple[list[dict], list[dict] | None, str]] = []
    for c in conversations:
        if isinstance(c, dict):
            items.append((list(c["messages"]), c.get("tools"), c.get("tool_format", "hermes")))
        elif hasattr(c, "student_messages"):
            items += [(list(m), c.tools, c.tool_format) for m in (c.student_messages, c.teacher_messages)]
        else:
            items.append((list(c), None, "hermes"))
    for n, (msgs, tools, fmt) in enumerate(items):
        report.conversations += 1
        try:
            ids, _ = renderer.render_conversation(msgs, tools, tool_format=fmt)
            ends_with_assistant = bool(msgs) and msgs[-1].get("role") == "assistant"
            one_shot = renderer.render_ids(msgs, tools, add_generation_prompt=not ends_with_assistant, tool_format=fmt)
            if ends_with_assistant:
                ids = ids + renderer._after_eot(one_shot)
        except Exception as exc:  # a template that cannot render turn by turn is a finding, not a crash
            report.errors.append(f"#{n}: {type(exc).__name__}: {exc}")
            continue
        if ids == one_shot:
            report.exact += 1
        else:
            p = next((i for i, (a, b) in enumerate(zip(ids, one_shot)) if a != b), min(len(ids), len(one_shot)))
            report.mismatches.append({
                "index": n, "position": p,
                "one_shot": renderer.decode(one_shot[max(0, p - 8): p + 8]),
                "turn_by_turn": renderer.decode(ids[max(0, p - 8): p + 8]),
            })
    return report
