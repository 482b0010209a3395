"""The TRL adapter: GRPOTrainer trains on the kit's envs through its rollout_func, with the env's reward.

Needs the ``trl`` extra (trl, datasets); skipped with a reason where it is missing.
"""

import math
import os

import pytest

pytest.importorskip("trl", reason="needs the trl extra: pip install -e '.[trl]'")
pytest.importorskip("datasets", reason="needs the trl extra: pip install -e '.[trl]'")

from pbsd_agents.envs.registry import make_env  # noqa: E402
from pbsd_agents.episode import Episode  # noqa: E402
from pbsd_agents.integrations.trl import EnvRollout, env_reward  # noqa: E402
from pbsd_agents.presets import default_model_dir  # noqa: E402


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir()), padding_side="left")


def replayed_reward(env, traj, stop_ids) -> float:
    """The env's reward for a trajectory's finished assistant turns, replayed on a fresh episode
    (an episode the collector cut, or whose last turn never finished, earns 0)."""
    turns = [s.text for s in traj.segments if s.kind == "action" and s.ids and s.ids[-1] in stop_ids]
    ep = Episode(env, options={"index": traj.index}).play(turns)
    return ep.reward if ep.done else 0.0


def test_dataset_is_the_student_view_and_maps_back_to_tasks():
    tok = _tokenizer()
    rollout = EnvRollout("pbsd/MathCalc-v0", tok)
    ds = rollout.dataset(range(3))
    assert ds.column_names == ["prompt", "task_index"] and ds["task_index"] == [0, 1, 2]
    env = make_env("pbsd/MathCalc-v0")
    for row in ds:
        _, info = env.reset(options={"index": row["task_index"]})
        text = " ".join(m["content"] for m in row["prompt"])
        assert info["privileged"] and info["privileged"] not in text  # the privileged context stays with the kit
        assert {m["role"] for m in row["prompt"]} <= {"system", "user"}


def test_unknown_prompt_and_missing_field_are_clear_errors():
    rollout = EnvRollout("pbsd/ToolCall-v0", _tokenizer())
    rollout.dataset([0])
    with pytest.raises(ValueError, match="did not make"):
        rollout([[{"role": "user", "content": "something else"}]], trainer=None)
    with pytest.raises(ValueError, match="rollout_func"):
        env_reward(completions=[[]])
    assert env_reward(completions=[[], []], env_reward=[1, 0.5]) == [1.0, 0.5]


@pytest.mark.slow
# ToolCall: tasks the embedded model solves now and then at temperature 0.7, so some rewards are 1
@pytest.mark.parametrize("env_id,tasks", [("pbsd/ToolCall-v0", [1, 3, 10, 15]), ("pbsd/MathCalc-v0", range(16))])
def test_grpo_trainer_two_steps_logs_the_env_rewards(env_id, tasks, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok = _tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir()))
    rollout = EnvRollout(env_id, tok, max_new_tokens=96)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=320, max_steps=2, logging_steps=1, report_to="none",
                      save_strategy="no", learning_rate=1e-4, seed=0, temperature=0.7, dataloader_num_workers=0)
    trainer = GRPOTrainer(model, reward_funcs=env_reward, args=args, train_dataset=rollout.dataset(tasks),
                          processing_class=tok, rollout_func=rollout)
    trainer.train()

    steps = [h for h in trainer.state.log_history if "rewards/env_reward/mean" in h]
    assert len(steps) == 2 and len(rollout.history) == 2
    env, stop_ids = make_env(env_id), rollout.renderer.stop_ids
    for logged, batch in zip(steps, rollout.history):
        assert len(batch) == 8
        replayed = [replayed_reward(env, t, stop_ids) for t in batch]
        assert replayed == [t.reward for t in batch]
        assert math.isclose(logged["rewards/env_reward/mean"], sum(replayed) / len(replayed), abs_tol=1e-6)
        # TRL counts only the model's tokens (env_mask 1): the environment's turns are not trained on
        mean_actions = sum(t.num_action_tokens for t in batch) / len(batch)
        assert math.isclose(logged["completions/mean_length"], mean_actions, rel_tol=1e-6)
    last = rollout.history[-1]
    assert list(trainer._logs["rewards"]["env_reward"]) == [replayed_reward(env, t, stop_ids) for t in last]
    if env_id == "pbsd/ToolCall-v0":
        assert any(t.reward > 0 for b in rollout.history for t in b)
    if env_id == "pbsd/MathCalc-v0":  # multi-turn: calculator results sit between the assistant turns
        assert any(t.turns > 1 and any(s.kind == "observation" for s in t.segments) for t in last)
    print(env_id, "rewards per step:", [[t.reward for t in b] for b in rollout.history], "cpu threads:",
          os.environ.get("OMP_NUM_THREADS"))
