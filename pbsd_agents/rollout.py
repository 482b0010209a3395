"""The rollout collector: run N environments in lockstep against an engine, token-in/token-out.

Each round generates one assistant turn for every active episode in one batched engine call, hands
each turn's text to its environment, and appends the environment's messages as an observation
segment (the chat-template delta, see :meth:`ChatRenderer.observation_ids`). An episode ends when its
environment ends it, or when it hits the collector's turn limit (``max_turns``) or token budget
(``max_tokens``, counted over the segments: the prompt is not included); both of the latter mark
the trajectory ``truncated=True`` with reward 0: it is never silently shortened. A turn that
reaches ``max_new_tokens`` without its end-of-turn token also ends the episode as truncated
(the environment never sees an unfinished turn). When an episode ends, its environment takes the
next task, so the batch stays full.

A trajectory's ``turns`` counts the assistant turns generated (an unfinished last one included),
``num_parse_errors`` the tool-call parse errors the environment reported over the episode.

``view="student"`` generates from the student prompt with the student's weights; ``view="teacher"``
from the teacher prompt (``env.teacher_messages``) with the teacher's weights. Both prompts are
stored in every trajectory, which therefore has both views (see :class:`~pbsd_agents.trajectory.Trajectory`).
A view per task collects both in lockstep: each round is then one engine call for both views
where the engine takes mixed views (``mixed_views``), as the trainer collects a step's samples.

:meth:`Collector.demonstrations` turns an env's oracle episodes into trajectories of the same form,
with no model involved (offline SFT, ``--algo sft --algo-arg source=oracle``).

Example:
    >>> from pbsd_agents.loading import build_tiny_model, byte_tokenizer
    >>> from pbsd_agents.models import Policy
    >>> tok = byte_tokenizer()
    >>> policy = Policy(build_tiny_model(tok, hidden_size=16, num_layers=1), tok, frozen_teacher=False)
    >>> collector = Collector.for_policy(policy, progress=False)
    >>> trajs = collector.collect("pbsd/MathCalc-v0", tasks=[0, 1], max_new_tokens=8, seed=0)
    >>> [(t.task_id, t.source, t.truncated) for t in trajs]    # a random model does not finish its turn
    [('mathcalc-train-0', 'student', True), ('mathcalc-train-1', 'student', True)]
"""

from __future__ import annotations

import json
import numbers
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

from .engines import Engine, Generation, SamplingParams, by_view
from .episode import VIEWS, Conversation, Episode
from .trajectory import Segment, Trajectory

__all__ = ["Collector", "Conversation"]


@dataclass
class _Rollout:
    """An :class:`Episode` being generated, with its token-level record."""

    order: int  # position in the task list (results come back in this order)
    env_id: str
    episode: Episode
    student_prompt_ids: list[int]
    teacher_prompt_ids: list[int]
    context: list[int]  # the generating view's ids so far (prompt + segments)
    view: str  # the generating view
    segments: list[Segment] = field(default_factory=list)
    used: int = 0  # segment tokens so far (the token budget's count)


def _task_spec(task) -> tuple[int | None, dict | None]:
    """``(seed, options)`` for ``env.reset`` from an index, ``{"index": i, "seed": s}`` or None."""
    if task is None:
        return None, None
    if isinstance(task, bool):
        raise TypeError(f"a task is an index (int), a dict with 'index' and/or 'seed', or None; got {task!r}")
    if isinstance(task, numbers.Integral):
        return None, {"index": int(task)}
    if isinstance(task, dict):
        unknown = set(task) - {"index", "seed"}
        if unknown:
            raise ValueError(f"unknown task key(s) {sorted(unknown)}; valid: index, seed")
        options = {"index": int(task["index"])} if task.get("index") is not None else None
        return task.get("seed"), options
    raise TypeError(f"a task is an index (int), a dict with 'index' and/or 'seed', or None; got {task!r}")


class Collector:
    """Collect trajectories from environments with an engine (see the module docstring).

    Args:
        engine: an :class:`~pbsd_agents.engines.Engine` (e.g. :class:`~pbsd_agents.engines.HFEngine`).
        renderer: the :class:`~pbsd_agents.chat.ChatRenderer` of the engine's tokenizer.
        num_envs: most episodes run at once (the generation batch); environments are made once per
            env id and kwargs, and reused.
        progress: show a tqdm progress bar (per finished trajectory).
        before_collect: called at the start of each ``collect`` with each view it collects (used to push the
            student's current adapter to a vLLM engine).
        after_round: called after each generation round (``train``, ``eval`` and ``rollout`` re-pick their
            CPU threads there).
    """

    def __init__(self, engine: Engine, renderer, *, num_envs: int = 64, progress: bool = True,
                 before_collect: Callable[[str], None] | None = None, after_round: Callable[[], None] | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.engine = engine
        self.renderer = renderer
        self.num_envs = num_envs
        self.progress = progress
        self.before_collect = before_collect
        self.after_round = after_round
        self._env_cache: dict[str, list] = {}

    @classmethod
    def for_policy(cls, policy, engine: str | Engine = "hf", *, batch_size: int = 64, num_envs: int | None = None,
                   progress: bool = True, **engine_kwargs) -> "Collector":
        """A collector for a :class:`~pbsd_agents.models.Policy` (from :func:`~pbsd_agents.loading.load_policy`).

        ``engine`` is ``"hf"`` (default), ``"hf-generate"`` (the same with transformers ``generate``),
        ``"vllm"`` (experimental; the student is served from the policy's LoRA adapter, pushed to vLLM at
        the start of every student collection) or an engine object.
        """
        renderer = policy.renderer
        before = None
        if engine in ("hf", "hf-generate"):
            from .engines import HFEngine

            if engine == "hf-generate":
                engine_kwargs = {**engine_kwargs, "decode": "generate"}
            engine = HFEngine(policy, batch_size=batch_size, stop_ids=renderer.stop_ids, **engine_kwargs)
        elif engine == "vllm":
            import warnings

            from .engines import VLLMEngine

            inner = policy.model.get_base_model() if policy.is_peft else policy.model
            engine = VLLMEngine(inner.config._name_or_path, stop_ids=renderer.stop_ids, **engine_kwargs)
            if policy.is_peft:
                vllm_engine = engine

                def before(view: str) -> None:
                    if view == "student":
                        vllm_engine.set_student_adapter(policy.model)
            else:
                warnings.warn("VLLMEngine serves the weights it loaded; updates to a fully fine-tuned policy are "
                              "not seen by it (use LoRA, or engine='hf')", stacklevel=2)
        elif isinstance(engine, str):
            raise ValueError(f"unknown engine {engine!r}; valid choices: hf, hf-generate, vllm (or an engine object)")
        return cls(engine, renderer, num_envs=num_envs or batch_size, progress=progress, before_collect=before)

    # ---- environments --------------------------------------------------------------------------

    def _envs(self, env, count: int, env_kwargs: dict | None) -> tuple[list, str]:
        if isinstance(env, str):
            from pbsd_agents.envs.registry import make_env

            key = env + json.dumps(env_kwargs or {}, sort_keys=True, default=str)
            pool = self._env_cache.setdefault(key, [])
            while len(pool) < count:
                pool.append(make_env(env, **(env_kwargs or {})))
            return pool[:count], env
        if env_kwargs:
            raise ValueError("env_kwargs only apply when the env is given by id")
        envs = list(env) if isinstance(env, (list, tuple)) else [env]
        if not envs:
            raise ValueError("no environments given")
        spec = getattr(envs[0], "spec", None)
        env_id = spec.id if spec is not None else type(envs[0].unwrapped).__name__
        return envs[:count], env_id

    # ---- collection ----------------------------------------------------------------------------

    def collect(self, env, tasks: Iterable, *, view: str | Sequence[str] = "student", sampling: SamplingParams | None = None,
                temperature: float | None = None, max_new_tokens: int | None = None, seed: int | None = None,
                max_turns: int | None = None, max_tokens: int = 4096, env_kwargs: dict | None = None,
                progress: bool | None = None) -> list[Trajectory]:
        """Run one episode per task and return the trajectories, in task order.

        Args:
            env: an env id (``"pbsd/ToolCall-v0"``; instances are made with ``env_kwargs`` and reused),
                an env instance, or a list of instances (at most that many episodes run at once).
            tasks: one entry per episode: a task index, ``{"index": i, "seed": s}``, or None (a random
                task). The same index may appear several times (several samples of one task).
            view: ``"student"`` or ``"teacher"``: which prompt and weights generate; or one of them per
                task (a step's teacher and student samples, collected in lockstep: each round is one
                engine call for both views when the engine takes mixed views).
            sampling: sampling settings; ``temperature``, ``max_new_tokens`` and ``seed`` override its fields.
            max_turns: assistant turns per episode (None: the environment's own limit only).
            max_tokens: token budget per trajectory, over the segments (the prompt is not counted).
        """
        return [t for t, _ in self.collect_with_conversations(
            env, tasks, view=view, sampling=sampling, temperature=temperature, max_new_tokens=max_new_tokens,
            seed=seed, max_turns=max_turns, max_tokens=max_tokens, env_kwargs=env_kwargs, progress=progress)]

    def collect_with_conversations(self, env, tasks: Iterable, *, view: str | Sequence[str] = "student",
                                   sampling: SamplingParams | None = None, temperature: float | None = None,
                                   max_new_tokens: int | None = None, seed: int | None = None,
                                   max_turns: int | None = None, max_tokens: int = 4096,
                                   env_kwargs: dict | None = None,
                                   progress: bool | None = None) -> list[tuple[Trajectory, Conversation]]:
        """Like :meth:`collect`, with each trajectory's :class:`Conversation` (for re-rendering checks)."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
        sampling = sampling or SamplingParams()
        overrides = {k: v for k, v in (("temperature", temperature), ("max_new_tokens", max_new_tokens),
                                       ("seed", seed)) if v is not None}
        sampling = replace(sampling, **overrides)
        specs = [_task_spec(t) for t in tasks]
        views = [view] * len(specs) if isinstance(view, str) else list(view)
        if len(views) != len(specs) or any(v not in VIEWS for v in views):
            raise ValueError(f"view must be 'student' or 'teacher', or one of them per task ({len(specs)}), got {view!r}")
        if not specs:
            return []
        envs, env_id = self._envs(env, min(self.num_envs, len(specs)), env_kwargs)
        names = sorted(set(views), reverse=True)  # student before teacher
        if self.before_collect is not None:
            for name in names:
                self.before_collect(name)

        from tqdm.auto import tqdm

        show = self.progress if progress is None else progress
        bar = tqdm(total=len(specs), desc=f"rollout ({'+'.join(names)})", unit="traj", disable=not show, leave=False)
        pending = deque(zip(range(len(specs)), specs, views))
        free = deque(envs)
        active: list[_Rollout] = []
        results: list[tuple[Trajectory, Conversation] | None] = [None] * len(specs)
        generated = 0
        round_no = 0
        try:
            while pending or active:
                while pending and free:
                    order, spec, v = pending.popleft()
                    active.append(self._start(free.popleft(), env_id, order, spec, v))
                round_no += 1
                rows = [min(sampling.max_new_tokens, max_tokens - ep.used) for ep in active]
                step_sampling = replace(sampling, max_new_tokens=max(rows))
                if sampling.seed is not None:
                    step_sampling = replace(step_sampling, seed=sampling.seed * 7919 + round_no)
                gens = self._generate([ep.context for ep in active], step_sampling, [ep.view == "teacher" for ep in active])
                if len(gens) != len(active):
                    raise RuntimeError(f"engine returned {len(gens)} generations for {len(active)} prompts")
                still = []
                for ep, gen, limit in zip(active, gens, rows):
                    generated += min(len(gen.ids), limit)
                    self._advance(ep, gen, limit, max_turns, max_tokens)
                    if ep.episode.done:
                        results[ep.order] = self._finish(ep)
                        free.append(ep.episode.env)
                        bar.update(1)
                    else:
                        still.append(ep)
                active = still
                bar.set_postfix(tokens=generated, active=len(active), refresh=False)
                if self.after_round is not None:
                    self.after_round()
        finally:
            bar.close()
            forget = getattr(self.engine, "forget", None)
            if forget is not None:  # key/values kept for the next round are not needed after the last one
                forget()
        return results  # type: ignore[return-value]

    def _generate(self, prompts: list[list[int]], sampling: SamplingParams, teacher: list[bool]) -> list[Generation]:
        """One round's engine call: one for both views where the engine takes mixed views, else one per view."""
        if len(set(teacher)) == 1:
            return self.engine.generate(prompts, sampling, teacher=teacher[0])
        if getattr(self.engine, "mixed_views", False):
            return self.engine.generate(prompts, sampling, teacher=teacher)
        return by_view(self.engine, prompts, sampling, teacher)

    # ---- demonstrations -------------------------------------------------------------------------

    def demonstrations(self, env, tasks: Iterable, *, views: str | Sequence[str] = "student",
                       env_kwargs: dict | None = None) -> list[Trajectory]:
        """The oracle's episodes on ``tasks`` as trajectories, for offline SFT (no model runs).

        Each episode plays the env's oracle turns against its real tools (as
        :func:`~pbsd_agents.episode.play_oracle` does); its conversation is rendered with this collector's
        chat template in both views, turn by turn as :meth:`collect` builds a sampled one: action
        segments are the oracle's turns (``encode(text) + [eot]``, no log-probabilities), observation
        segments the template deltas of the real tool results. There is no token budget: a
        demonstration is whole. ``views`` (one, or one per task) sets each trajectory's ``source``,
        the view the demonstration is shown in. ``env``, ``tasks`` and ``env_kwargs`` are as in :meth:`collect`.
        """
        specs = [_task_spec(t) for t in tasks]
        views = [views] * len(specs) if isinstance(views, str) else list(views)
        if len(views) != len(specs) or any(v not in VIEWS for v in views):
            raise ValueError(f"views must be 'student' or 'teacher', one per task ({len(specs)}), got {views!r}")
        if not specs:
            return []
        (one,), env_id = self._envs(env, 1, env_kwargs)
        out = []
        for order, ((seed, options), view) in enumerate(zip(specs, views)):
            episode = Episode(one, seed=seed, options=options)
            if episode.privileged_in_student_view():  # before the oracle's turns, which may well repeat it
                raise ValueError(f"{env_id}: task {episode.task_id!r} shows its privileged text in the student messages")
            episode.play(one.unwrapped.oracle_actions())
            out.append(self._demonstration(episode, env_id, order, view))
        return out

    def _demonstration(self, e: Episode, env_id: str, order: int, view: str) -> Trajectory:
        conv, r = e.conversation, self.renderer
        student, teacher = (r.conversation_segments(conv.messages(v), conv.tools, tool_format=conv.tool_format)
                            for v in VIEWS)
        segments = []
        # Both views hold the same assistant turns, so their segments pair up one to one.
        for (kind, s_ids), (_, t_ids) in zip(student[1:], teacher[1:]):
            if kind == "action":
                segments.append(Segment("action", s_ids, None, r.assistant_text(s_ids)[0]))
            else:
                segments.append(Segment("observation", s_ids, None, r.decode(s_ids),
                                        teacher_ids=t_ids if t_ids != s_ids else None))
        return Trajectory(
            env_id=env_id, task_id=e.task_id or str(order), source=view, privileged=e.privileged,
            student_prompt_ids=student[0][1], teacher_prompt_ids=teacher[0][1], segments=segments, reward=e.reward,
            success=e.success, turns=e.turns, truncated=e.truncated, num_parse_errors=e.parse_errors, index=e.index,
            task_info=e.task_info, turn_privileged=list(e.turn_privileged), outcome=e.outcome,
        )

    def _start(self, env, env_id: str, order: int, spec, view: str) -> _Rollout:
        seed, options = spec
        episode = Episode(env, seed=seed, options=options)
        if episode.privileged_in_student_view():
            raise ValueError(f"{env_id}: task {episode.task_id!r} shows its privileged text in the student messages")
        conv = episode.conversation
        s_ids = self.renderer.prompt_ids(conv.student_messages, conv.tools, tool_format=conv.tool_format)
        t_ids = self.renderer.prompt_ids(conv.teacher_messages, conv.tools, tool_format=conv.tool_format)
        return _Rollout(order=order, env_id=env_id, episode=episode, student_prompt_ids=s_ids, teacher_prompt_ids=t_ids,
                        context=list(s_ids if view == "student" else t_ids), view=view)

    def _advance(self, ep: _Rollout, gen: Generation, limit: int, max_turns: int | None, max_tokens: int) -> None:
        view = ep.view
        ids, logprobs, finished = list(gen.ids), list(gen.logprobs), gen.finished
        if len(ids) > limit:  # this row's share of the batch's max_new_tokens (its budget) ran out
            ids, logprobs, finished = ids[:limit], logprobs[:limit], False
        text, ends_with_stop = self.renderer.assistant_text(ids)
        if finished and not ends_with_stop:
            raise RuntimeError("engine reported a finished turn that does not end with a stop id")
        ep.segments.append(Segment("action", ids, logprobs, text))
        ep.context.extend(ids)
        ep.used += len(ids)
        episode = ep.episode
        if not finished:  # cut by max_new_tokens or the token budget: the env never sees half a turn
            episode.cut(unfinished_turn=True)
            return
        obs = episode.step(text)
        if episode.done:
            return
        if max_turns is not None and episode.turns >= max_turns:
            episode.cut()
            return
        conv = episode.conversation
        teacher_obs = episode.teacher_observation(obs)  # differs from obs only when a per-turn privileged note arrived
        delta = self.renderer.observation_ids(conv.messages(view), obs if view == "student" else teacher_obs,
                                              conv.tools, tool_format=conv.tool_format)
        if ep.used + len(delta) >= max_tokens:  # no room left for even one more action token
            episode.cut()
            return
        segment = Segment("observation", delta, None, self.renderer.decode(delta))
        if teacher_obs != obs:  # the shared segment is the student's; the teacher's copy rides along
            other = self.renderer.observation_ids(conv.messages("teacher" if view == "student" else "student"),
                                                  teacher_obs if view == "student" else obs, conv.tools,
                                                  tool_format=conv.tool_format)
            s_ids, t_ids = (delta, other) if view == "student" else (other, delta)
            segment = Segment("observation", s_ids, None, self.renderer.decode(s_ids),
                              teacher_ids=t_ids if t_ids != s_ids else None)
        ep.segments.append(segment)
        ep.context.extend(delta)
        ep.used += len(delta)
        episode.observe(obs)

    @staticmethod
    def _finish(ep: _Rollout) -> tuple[Trajectory, Conversation]:
        e = ep.episode
        traj = Trajectory(
            env_id=ep.env_id, task_id=e.task_id or str(ep.order), source=ep.view, privileged=e.privileged,
            student_prompt_ids=ep.student_prompt_ids, teacher_prompt_ids=ep.teacher_prompt_ids,
            segments=ep.segments, reward=e.reward, success=e.success, turns=e.turns, truncated=e.truncated,
            num_parse_errors=e.parse_errors, index=e.index, task_info=e.task_info,
            turn_privileged=list(e.turn_privileged), outcome=e.outcome,
        )
        return traj, e.conversation
