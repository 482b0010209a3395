"""Trajectories as Hugging Face datasets (`rollout --format parquet|hf`, to_dataset) and a DPO step on
(teacher ≻ student) pairs. Needs the trl extra (datasets, trl); skipped with a reason where it is missing."""

import functools
import os

import pytest

datasets = pytest.importorskip("datasets", reason="needs the trl extra: pip install -e '.[trl]'")

from pbsd_agents.cli import main  # noqa: E402
from pbsd_agents.integrations.datasets import preference_pairs, replay_conversation, to_dataset  # noqa: E402
from pbsd_agents.trajectory import load_jsonl  # noqa: E402


@functools.lru_cache(maxsize=None)
def _policy():
    from pbsd_agents.checkpoint import load_any

    return load_any("default", frozen_teacher=False)


@functools.lru_cache(maxsize=None)
def _rollout(env_id: str, view: str, n: int = 4):
    """``(trajectories, conversations)`` of the embedded model on tasks 0..n-1."""
    from pbsd_agents.rollout import Collector

    collector = Collector.for_policy(_policy(), progress=False)
    pairs = collector.collect_with_conversations(env_id, range(n), view=view, temperature=0.7, seed=0,
                                                 max_new_tokens=96, max_tokens=400)
    return [t for t, _ in pairs], [c for _, c in pairs]


@pytest.mark.parametrize("env_id", ["pbsd/ToolCall-v0", "pbsd/MathCalc-v0"])
def test_to_dataset_has_both_views_rewards_and_messages(env_id):
    trajs, convs = _rollout(env_id, "student")
    ds = to_dataset(trajs, convs)
    assert len(ds) == len(trajs)
    for row, t, conv in zip(ds, trajs, convs):
        assert (row["student_input_ids"], row["student_action_mask"]) == t.student_view()
        assert (row["teacher_input_ids"], row["teacher_action_mask"]) == t.teacher_view()
        assert row["reward"] == t.reward and row["index"] == t.index and row["source"] == "student"
        assert [m["content"] for m in row["messages"]] == [m["content"] for m in conv.student_messages]
        prompt = " ".join(m["content"] for m in row["messages"] if m["role"] in ("system", "user"))
        assert t.privileged and t.privileged not in prompt  # the student's prompt holds no privileged text
        assert t.privileged in " ".join(m["content"] for m in row["teacher_messages"])
    # a file's trajectories (no conversations) get the same messages by replaying them on the env
    replayed = to_dataset(trajs, stop_ids=_policy().renderer.stop_ids)
    assert replayed["messages"] == ds["messages"] and replayed["teacher_messages"] == ds["teacher_messages"]
    with pytest.raises(ValueError, match="stop_ids"):
        to_dataset(trajs)
    assert replay_conversation(trajs[0], _policy().renderer.stop_ids).student_messages[0] == convs[0].student_messages[0]


@pytest.mark.parametrize("fmt", ["parquet", "hf"])
def test_rollout_cli_writes_a_dataset(fmt, tmp_path, capsys):
    out = tmp_path / ("t.parquet" if fmt == "parquet" else "t_hf")
    rc = main(["rollout", "--env", "pbsd/MathCalc-v0", "--model", "default", "--n", "3", "--out", str(out),
               "--format", fmt, "--max-new-tokens", "64", "--no-progress", "--threads", "1"])
    assert rc == 0 and "wrote 3 student trajectories" in capsys.readouterr().out
    ds = datasets.Dataset.from_parquet(str(out)) if fmt == "parquet" else datasets.load_from_disk(str(out))
    assert len(ds) == 3 and ds["index"] == [0, 1, 2]
    for row in ds:
        n = row["student_prompt_len"]
        assert len(row["student_input_ids"]) == len(row["student_action_mask"]) and not any(row["student_action_mask"][:n])
        assert row["messages"][-1]["role"] in ("assistant", "tool", "user")


def test_rollout_cli_jsonl_stays_the_default(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["rollout", "--env", "pbsd/MathCalc-v0", "--model", "default", "--n", "2", "--out", str(out),
                 "--max-new-tokens", "32", "--no-progress", "--threads", "1"]) == 0
    assert [t.index for t in load_jsonl(out)] == [0, 1]
    assert main(["rollout", "--env", "pbsd/MathCalc-v0", "--model", "default", "--n", "2", "--out", str(out),
                 "--format", "hf", "--check"]) == 2
    assert "--check reads JSON lines" in capsys.readouterr().err


def test_preference_pairs_then_one_dpo_step(tmp_path, monkeypatch):
    pytest.importorskip("trl", reason="needs the trl extra: pip install -e '.[trl]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from pbsd_agents.presets import default_model_dir

    teacher, _ = _rollout("pbsd/ToolCall-v0", "teacher")
    student, _ = _rollout("pbsd/ToolCall-v0", "student")
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()))
    pairs = preference_pairs(teacher, student, tok)
    assert len(pairs) == 4 and pairs["task_id"] == [t.task_id for t in teacher]
    for row, t, s in zip(pairs, teacher, student):
        assert row["prompt"] == tok.decode(s.student_prompt_ids, skip_special_tokens=False)
        assert t.privileged not in row["prompt"]  # the student's prompt: DPO trains the student view
        assert (row["chosen_reward"], row["rejected_reward"]) == (t.reward, s.reward)
    better = preference_pairs(teacher, student, tok, min_margin=1.0)
    assert all(r["chosen_reward"] - r["rejected_reward"] >= 1.0 for r in better)
    with pytest.raises(ValueError, match="generated by the teacher"):
        preference_pairs(teacher, teacher, tok)

    model = AutoModelForCausalLM.from_pretrained(str(default_model_dir()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, max_steps=1,
                     learning_rate=1e-3, report_to="none", save_strategy="no", logging_steps=1, seed=0,
                     dataloader_num_workers=0)
    trainer = DPOTrainer(model, args=args, train_dataset=pairs, processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert logged and logged[0]["loss"] > 0
    assert any(not v.equal(model.state_dict()[k]) for k, v in before.items())
    print("dpo pairs:", list(zip(pairs["chosen_reward"], pairs["rejected_reward"])), os.environ.get("OMP_NUM_THREADS"))
