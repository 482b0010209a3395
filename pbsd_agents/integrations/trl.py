"""Train TRL's ``GRPOTrainer`` (trl 1.16) on any registered pbsd environment, multi-turn included.

TRL 1.16 offers two hooks for agents: ``environment_factory`` (an object whose public methods become
tools, driven by TRL's own tool-call loop) and ``rollout_func`` (a function that produces the
completions itself). The kit's envs need the second: each task brings its own JSON-schema tools and
call format, an env may answer with a user turn rather than a tool result and ends the episode
itself, and its reward is decided from the whole episode. So :class:`EnvRollout` is a
``rollout_func``: it plays one episode per prompt with the kit's collector on the trainer's live
model and returns the episode's token ids: the assistant turns (trained on, ``env_mask`` 1) and the
environment's turns between them (``env_mask`` 0), with the env's reward as an extra field that
:func:`env_reward` hands to TRL as its reward.

Only the student view leaves the kit: prompts, completions and ids are the student's; the
privileged context (the teacher prompt) stays in the trajectories kept on the adapter.

Example (see ``scripts/trl_grpo.py`` for the full command)::

    rollout = EnvRollout("pbsd/ToolCall-v0", tokenizer)
    trainer = GRPOTrainer(model, reward_funcs=env_reward, args=GRPOConfig(...),
                          train_dataset=rollout.dataset(range(64)), processing_class=tokenizer,
                          rollout_func=rollout)
"""

from __future__ import annotations

import json
from collections import deque
from typing import Iterable

from . import require

__all__ = ["EnvRollout", "env_reward", "student_prompt"]


def _prompt_key(messages) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)


def student_prompt(env, index: int) -> list[dict]:
    """Task ``index``'s student messages (role and content), as a conversational TRL prompt."""
    from ..episode import Episode

    conv = Episode(env, options={"index": int(index)}).conversation
    return [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in conv.student_messages]


class EnvRollout:
    """A TRL ``rollout_func`` that plays episodes of ``env_id`` (see the module docstring).

    Args:
        env_id: a registered env id, e.g. ``"pbsd/MathCalc-v0"``.
        tokenizer: the trained model's tokenizer (its chat template renders the kit's prompts).
        env_kwargs: env constructor arguments (``split`` etc.).
        max_new_tokens: tokens per assistant turn (default: the trainer's ``max_completion_length``,
            which is also the episode's token budget, prompt excluded).
        max_turns: assistant turns per episode (default: the env's own limit).
        batch_size: episodes generated together.
        history: how many rollout batches to keep in :attr:`history` (the full trajectories, both views).
    """

    def __init__(self, env_id: str, tokenizer, *, env_kwargs: dict | None = None, max_new_tokens: int | None = None,
                 max_turns: int | None = None, batch_size: int = 64, history: int = 4):
        from ..chat import ChatRenderer
        from ..envs.registry import make_env

        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.tokenizer = tokenizer
        self.renderer = ChatRenderer(tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_turns = max_turns
        self.batch_size = batch_size
        self.history: deque = deque(maxlen=history)
        self._env = make_env(env_id, **self.env_kwargs)
        self._index_of: dict[str, int] = {}
        self._collector = None
        self._model = None

    def dataset(self, indices: Iterable[int]):
        """A ``datasets.Dataset`` with a conversational ``prompt`` (the student's messages) and
        ``task_index`` per task, for ``GRPOTrainer(train_dataset=...)``."""
        Dataset = require("datasets").Dataset
        rows = []
        for i in indices:
            prompt = student_prompt(self._env, i)
            key = _prompt_key(prompt)
            if self._index_of.get(key, i) != i:
                # rollout_func sees only the prompt, so two tasks that look alike could not be told apart
                raise ValueError(f"{self.env_id}: tasks {self._index_of[key]} and {i} have the same student prompt")
            self._index_of[key] = int(i)
            rows.append({"prompt": prompt, "task_index": int(i)})
        if not rows:
            raise ValueError("no task indices given")
        return Dataset.from_list(rows)

    def _collector_for(self, trainer):
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._collector is None or self._model is not model:
            from ..models import Policy
            from ..rollout import Collector

            # the live model generates: the engine re-reads the weights after every optimizer step
            policy = Policy(model, self.tokenizer, renderer=self.renderer, frozen_teacher=False)
            self._collector = Collector.for_policy(policy, batch_size=self.batch_size, progress=False)
            self._model = model
        return self._collector

    def __call__(self, prompts: list, trainer) -> dict:
        """Play one episode per prompt; return TRL's rollout fields (student view only)."""
        tasks = []
        for p in prompts:
            key = _prompt_key(p) if isinstance(p, list) else None
            if key not in self._index_of:
                raise ValueError(f"{self.env_id}: a prompt that EnvRollout.dataset() did not make; build the "
                                 "train dataset with rollout.dataset(indices)")
            tasks.append(self._index_of[key])
        budget = trainer.max_completion_length
        trajs = self._collector_for(trainer).collect(
            self.env_id, tasks, view="student", temperature=trainer.temperature,
            max_new_tokens=min(self.max_new_tokens or budget, budget), max_tokens=budget,
            max_turns=self.max_turns, env_kwargs=self.env_kwargs)
        self.history.append(trajs)
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [],
               "env_reward": [], "env_success": [], "task_index": []}
        for t in trajs:
            out["prompt_ids"].append(list(t.student_prompt_ids))
            ids, mask = t.student_view()
            n = len(t.student_prompt_ids)
            out["completion_ids"].append(ids[n:])
            out["env_mask"].append(mask[n:])
            out["logprobs"].append([lp for s in t.segments for lp in _sampled_logprobs(s)])
            out["env_reward"].append(float(t.reward))
            out["env_success"].append(bool(t.success))
            out["task_index"].append(t.index)
        return out


def _sampled_logprobs(seg) -> list[float]:
    # environment tokens were not sampled: 0.0, as TRL writes for its own tool results
    if seg.kind == "action" and seg.logprobs is not None:
        return list(seg.logprobs)
    return [0.0] * len(seg.ids)


def env_reward(completions, env_reward=None, **kwargs) -> list[float]:
    """TRL reward function: each episode's reward as its environment gave it (an :class:`EnvRollout` field)."""
    if env_reward is None:
        raise ValueError("env_reward needs GRPOTrainer(rollout_func=EnvRollout(...)): no env_reward field in the batch")
    return [float(r) for r in env_reward]
