"""Trajectories as Hugging Face datasets, and DPO preference pairs from a rollout.

:func:`to_dataset` turns :class:`~pbsd_agents.trajectory.Trajectory` objects into a
``datasets.Dataset``: one row per trajectory with both views' ``input_ids`` and action masks, the
reward and outcome, and the messages of both views (``messages`` is the student's, the column TRL's
``SFTTrainer`` reads). :func:`preference_pairs` pairs a teacher sample with a student sample of the
same task as (chosen ≻ rejected), in the prompt/chosen/rejected layout of TRL's ``DPOTrainer``.

Needs ``datasets`` (the ``trl`` extra: ``pip install "pbsd-agents[trl]"``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..episode import Conversation, Episode
from ..trajectory import Trajectory
from . import require

__all__ = ["to_dataset", "preference_pairs", "replay_conversation"]


def _plain(messages: Sequence[dict]) -> list[dict]:
    # role and content only: one Arrow type for every row (envs add keys such as tool names unevenly)
    return [{"role": str(m.get("role", "")), "content": str(m.get("content") or "")} for m in messages]


def replay_conversation(traj: Trajectory, stop_ids: Sequence[int], env_kwargs: dict | None = None) -> Conversation:
    """The messages behind ``traj``, rebuilt by replaying its finished assistant turns (those ending
    with one of ``stop_ids``, e.g. ``ChatRenderer.stop_ids``) on a fresh episode of its task, with the
    env's answers where the trajectory has them (for trajectories read back from a file)."""
    from pbsd_agents.envs.registry import make_env

    if traj.index is None:
        raise ValueError(f"trajectory {traj.task_id!r} has no task index: its conversation cannot be replayed")
    episode = Episode(make_env(traj.env_id, **(env_kwargs or {})), options={"index": traj.index})
    obs = None
    for seg in traj.segments:
        if seg.kind == "action":
            if episode.done or not seg.ids or seg.ids[-1] not in stop_ids:  # the env never saw this turn
                break
            obs = episode.step(seg.text)
        elif obs is not None and not episode.done:
            episode.observe(obs)
            obs = None
    return episode.conversation


def to_dataset(trajectories: Iterable[Trajectory], conversations: Iterable[Conversation] | None = None, *,
               stop_ids: Sequence[int] | None = None, env_kwargs: dict | None = None):
    """A ``datasets.Dataset`` of ``trajectories``, one row each (see the module docstring).

    ``conversations``: each trajectory's :class:`~pbsd_agents.episode.Conversation` (as
    :meth:`Collector.collect_with_conversations` returns them); when not given they are replayed
    from the env (:func:`replay_conversation`, with ``stop_ids`` and ``env_kwargs``).
    """
    Dataset = require("datasets").Dataset
    trajs = list(trajectories)
    if conversations is None and stop_ids is None:
        raise ValueError("to_dataset needs the conversations, or stop_ids to replay them from the env")
    convs = (list(conversations) if conversations is not None
             else [replay_conversation(t, stop_ids, env_kwargs) for t in trajs])
    if len(convs) != len(trajs):
        raise ValueError(f"{len(trajs)} trajectories but {len(convs)} conversations")
    rows = []
    for t, conv in zip(trajs, convs):
        s_ids, s_mask = t.student_view()
        t_ids, t_mask = t.teacher_view()
        rows.append({
            "env_id": t.env_id, "task_id": t.task_id, "index": t.index, "source": t.source,
            "reward": float(t.reward), "success": bool(t.success), "turns": t.turns, "truncated": bool(t.truncated),
            "privileged": t.privileged,
            "student_input_ids": s_ids, "student_action_mask": s_mask, "student_prompt_len": len(t.student_prompt_ids),
            "teacher_input_ids": t_ids, "teacher_action_mask": t_mask, "teacher_prompt_len": len(t.teacher_prompt_ids),
            "messages": _plain(conv.student_messages), "teacher_messages": _plain(conv.teacher_messages),
        })
    if not rows:
        raise ValueError("no trajectories given")
    return Dataset.from_list(rows)


def preference_pairs(teacher: Iterable[Trajectory], student: Iterable[Trajectory], tokenizer, *,
                     min_margin: float | None = None):
    """A ``DPOTrainer`` dataset: for each task sampled in both lists, the teacher's sample (chosen)
    over the student's (rejected), both after the student prompt.

    Teacher samples were generated from the privileged prompt, but the pair holds only the student
    view: ``prompt`` is the student prompt, ``chosen``/``rejected`` the episodes' tokens after it
    (assistant turns and the env's turns between them), as text in the standard (not chat) layout,
    so the kit's exact rendering is kept. Tasks pair in order (the i-th teacher sample of a task with
    its i-th student sample). ``min_margin``: keep only pairs whose teacher reward exceeds the
    student's by at least this much. Extra columns: ``task_id``, ``chosen_reward``, ``rejected_reward``.
    """
    Dataset = require("datasets").Dataset
    by_task: dict[tuple, list[Trajectory]] = {}
    for t in student:
        if t.source != "student":
            raise ValueError(f"trajectory {t.task_id!r} in the student list was generated by the {t.source}")
        by_task.setdefault((t.env_id, t.task_id), []).append(t)
    rows = []
    for t in teacher:
        if t.source != "teacher":
            raise ValueError(f"trajectory {t.task_id!r} in the teacher list was generated by the {t.source}")
        others = by_task.get((t.env_id, t.task_id))
        if not others:
            continue
        s = others.pop(0)
        if min_margin is not None and t.reward - s.reward < min_margin:
            continue

        def text(ids):
            return tokenizer.decode(ids, skip_special_tokens=False)

        rows.append({"prompt": text(s.student_prompt_ids),
                     "chosen": text([i for seg in t.segments for i in seg.ids]),  # the segments' student copies
                     "rejected": text([i for seg in s.segments for i in seg.ids]),
                     "task_id": t.task_id, "chosen_reward": float(t.reward), "rejected_reward": float(s.reward)})
    if not rows:
        raise ValueError("no (teacher, student) pair: the two lists share no task" +
                         (f" with a reward margin of {min_margin}" if min_margin is not None else ""))
    return Dataset.from_list(rows)
