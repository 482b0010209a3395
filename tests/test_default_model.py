"""The embedded default model: shipped files load, size limits, and the teacher/student gap it leaves for PBSD."""

from pathlib import Path

import pytest

ASSET = Path(__file__).resolve().parents[1] / "pbsd_agents" / "assets" / "default-model"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").exists(), reason=f"no embedded model at {ASSET}")


@pytest.fixture(scope="module")
def collector():
    from pbsd_agents.loading import load_policy
    from pbsd_agents.rollout import Collector

    return Collector.for_policy(load_policy("default", device="cpu"), progress=False)


def test_shipped_files_are_small_and_load(collector):
    size = sum(f.stat().st_size for f in ASSET.rglob("*") if f.is_file())
    assert size <= 10 * 2**20, f"embedded model is {size / 2**20:.1f} MB"
    model = collector.engine.policy.model
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 <= n <= 3e6
    assert model.config.model_type in ("qwen2", "llama")
    tok = collector.engine.policy.tokenizer
    assert tok.tokenize("816") == tok.tokenize(" 816")[1:]  # digits one by one: results tokenize like answers


def _gap(collector, env_id, n):
    out = {}
    for view in ("student", "teacher"):
        trajs = collector.collect(env_id, list(range(n)), env_kwargs={"split": "test"}, view=view, temperature=0.0,
                                  max_new_tokens=160, max_tokens=512)
        out[view] = sum(t.success for t in trajs) / n
    return out


def test_default_env_leaves_room_for_pbsd(collector):
    """On the env `pbsd-agents train` uses, the teacher view solves most held-out tasks and the student view few."""
    from pbsd_agents.trainer import TrainConfig

    gap = _gap(collector, TrainConfig().env, 32)
    assert gap["teacher"] >= 0.75 and gap["teacher"] >= gap["student"] + 0.3, gap


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"])
def test_gap_on_every_procedural_env(collector, env_id):
    gap = _gap(collector, env_id, 64)
    assert gap["teacher"] > gap["student"], gap


def test_build_demos_are_the_oracle_turns_rendered_as_the_collector_renders_them():
    """scripts/build_default_model.py: oracle conversations, rendered by ChatRenderer.render_conversation."""
    from transformers import AutoTokenizer

    from pbsd_agents.chat import ChatRenderer
    from scripts import build_default_model as build

    renderer = ChatRenderer(AutoTokenizer.from_pretrained(str(ASSET)))
    for conv in build.corpus_episodes("pbsd/MathCalc-v0", 3, seed=0):
        turns = conv.assistant_turns()
        ids, mask = renderer.render_conversation(conv.teacher_messages, conv.tools, tool_format=conv.tool_format)
        assert renderer.decode([i for i, m in zip(ids, mask) if m]) == "".join(t + renderer.eot_token for t in turns)
        assert ids == renderer.render_ids(conv.teacher_messages, conv.tools)[: len(ids)]  # one-shot rendering agrees
        text = build.corpus_text(conv.student_messages)
        assert text.endswith(turns[-1] + "\n") and text.startswith(conv.student_messages[0]["content"])
