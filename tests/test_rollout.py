"""The collector: lockstep batches, segments, budgets, views, and isolation of parse errors."""


import pytest

from tests.support import (
    TOY_ENV_ID, AdderEnv, ScriptedEngine, byte_tok, oracle_script, renderer_for, tiny_model,
)

from pbsd_agents.engines import HFEngine, SamplingParams
from pbsd_agents.invariants import check_trajectory
from pbsd_agents.models import Policy
from pbsd_agents.rollout import Collector

TOKENIZERS = ["byte", "qwen"]


def oracle_collector(name, indices, *, faults=(), num_envs=64, env=AdderEnv, env_kwargs=None):
    r = renderer_for(name)
    engine = ScriptedEngine(r, oracle_script(env, indices, faults=faults, env_kwargs=env_kwargs))
    return Collector(engine, r, num_envs=num_envs, progress=False), engine


@pytest.mark.parametrize("name", TOKENIZERS)
def test_oracle_episodes_have_alternating_segments(name):
    collector, engine = oracle_collector(name, range(4))
    pairs = collector.collect_with_conversations(TOY_ENV_ID, [0, 1, 2, 3])
    r = renderer_for(name)
    for i, (t, conv) in enumerate(pairs):
        assert (t.task_id, t.index, t.source, t.env_id) == (f"adder-train-{i}", i, "student", TOY_ENV_ID)
        assert [s.kind for s in t.segments] == ["action", "observation"] * 2 + ["action"]
        assert (t.reward, t.success, t.turns, t.truncated, t.num_parse_errors) == (1.0, True, 3, False, 0)
        assert all(s.ids[-1] == r.eot_id for s in t.segments if s.kind == "action")
        assert "result = " in t.segments[1].text and t.segments[1].text.startswith("\n")
        assert t.privileged.startswith(f"SECRET-PLAN-{i}")
        assert check_trajectory(t, r, conversation=conv) == []
    # lockstep: one batch per turn, all four episodes in it
    assert [len(p) for p, _, _ in engine.calls] == [4, 4, 4]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_parse_error_in_one_episode_leaves_the_others_alone(name):
    clean, _ = oracle_collector(name, range(4))
    faulty, _ = oracle_collector(name, range(4), faults={2})
    a = clean.collect(TOY_ENV_ID, range(4))
    b = faulty.collect(TOY_ENV_ID, range(4))
    for i in (0, 1, 3):
        assert a[i] == b[i]
    bad = b[2]
    assert bad.num_parse_errors == 1 and bad.turns == 4 and bad.success
    assert "could not parse tool call" in bad.segments[1].text


def test_continuous_batching_refills_free_envs():
    collector, engine = oracle_collector("byte", range(5), num_envs=2)
    trajs = collector.collect(TOY_ENV_ID, [0, 1, 2, 3, 4])
    assert [t.index for t in trajs] == [0, 1, 2, 3, 4] and all(t.success for t in trajs)
    assert max(len(p) for p, _, _ in engine.calls) == 2
    assert sum(len(p) for p, _, _ in engine.calls) == 15  # 5 episodes x 3 turns, no wasted rows


def test_after_round_is_called_once_per_generation_round():
    collector, engine = oracle_collector("byte", range(5), num_envs=2)
    rounds = []
    collector.after_round = lambda: rounds.append(len(engine.calls))
    collector.collect(TOY_ENV_ID, [0, 1, 2, 3, 4])
    assert rounds == list(range(1, len(engine.calls) + 1))  # after each engine call, before the next


def test_repeated_tasks_and_random_tasks():
    collector, _ = oracle_collector("byte", range(50))
    trajs = collector.collect(TOY_ENV_ID, [3, 3, {"index": 4, "seed": 1}, {"seed": 5}, None])
    assert [t.index for t in trajs[:3]] == [3, 3, 4]
    assert trajs[0] == trajs[1]
    assert all(t.success for t in trajs)
    with pytest.raises(ValueError, match="valid: index, seed"):
        collector.collect(TOY_ENV_ID, [{"idx": 1}])
    with pytest.raises(TypeError):
        collector.collect(TOY_ENV_ID, ["0"])


def test_token_budget_truncates_and_never_exceeds():
    full = oracle_collector("byte", [0])[0].collect(TOY_ENV_ID, [0])[0]
    n_first = len(full.segments[0].ids)
    for budget in (n_first - 5, n_first + 3, full.num_tokens - 1):
        t = oracle_collector("byte", [0])[0].collect(TOY_ENV_ID, [0], max_tokens=budget)[0]
        assert t.truncated and t.reward == 0.0 and not t.success
        assert t.num_tokens <= budget
        assert t.segments[-1].kind == "action"  # an observation with no room after it is not appended
        assert check_trajectory(t, renderer_for("byte")) == []
    t = oracle_collector("byte", [0])[0].collect(TOY_ENV_ID, [0], max_tokens=full.num_tokens)[0]
    assert not t.truncated and t == full


def test_unfinished_turn_ends_the_episode_unseen_by_the_env():
    collector, _ = oracle_collector("byte", [0])
    t = collector.collect(TOY_ENV_ID, [0], max_new_tokens=10)[0]
    assert t.truncated and t.turns == 1 and len(t.segments) == 1 and len(t.segments[0].ids) == 10
    assert t.segments[0].ids[-1] not in renderer_for("byte").stop_ids
    assert check_trajectory(t, renderer_for("byte")) == []


def test_max_turns_truncates():
    collector, _ = oracle_collector("byte", [0])
    t = collector.collect(TOY_ENV_ID, [0], max_turns=2)[0]
    assert t.truncated and t.turns == 2 and [s.kind for s in t.segments] == ["action", "observation", "action"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_teacher_view_generates_from_the_teacher_prompt(name):
    collector, engine = oracle_collector(name, range(2))
    pairs = collector.collect_with_conversations(TOY_ENV_ID, [0, 1], view="teacher", temperature=0.0)
    r = renderer_for(name)
    prompts, sampling, teacher = engine.calls[0]
    assert teacher and sampling.temperature == 0.0
    for (t, conv), p in zip(pairs, prompts):
        assert t.source == "teacher" and p == t.teacher_prompt_ids
        assert t.privileged in r.decode(t.teacher_prompt_ids)
        assert t.privileged not in r.decode(t.student_prompt_ids)
        assert check_trajectory(t, r, conversation=conv) == []


def test_real_env_by_id_with_env_kwargs():
    env_id = "pbsd/MathCalc-v0"
    collector, _ = oracle_collector("byte", range(3), env=env_id, env_kwargs={"split": "test"})
    trajs = collector.collect(env_id, [0, 1, 2], env_kwargs={"split": "test"})
    assert all(t.success and t.task_id.startswith("mathcalc-test") for t in trajs)


def test_env_instances_and_errors():
    collector, _ = oracle_collector("byte", range(3))
    trajs = collector.collect([AdderEnv(), AdderEnv()], [0, 1, 2])
    assert all(t.success for t in trajs) and trajs[0].env_id == "AdderEnv"
    with pytest.raises(ValueError, match="unknown env .pbsd/Nope-v0.; registered envs: pbsd/"):
        collector.collect("pbsd/Nope-v0", [0])
    with pytest.raises(ValueError, match="view must be"):
        collector.collect(TOY_ENV_ID, [0], view="oracle")
    assert collector.collect(TOY_ENV_ID, []) == []


def test_hf_engine_end_to_end_with_progress_bar(capsys):
    tok = byte_tok()
    r = renderer_for("byte")
    policy = Policy(tiny_model("byte", mean_turn=6.0), tok)
    collector = Collector(HFEngine(policy, stop_ids=r.stop_ids), r, progress=True)
    pairs = collector.collect_with_conversations(TOY_ENV_ID, range(6), sampling=SamplingParams(max_new_tokens=12, seed=0))
    for t, conv in pairs:
        assert check_trajectory(t, r, conversation=conv) == []
        assert all(len(s.logprobs) == len(s.ids) for s in t.segments if s.kind == "action")
    again = collector.collect(TOY_ENV_ID, range(6), sampling=SamplingParams(max_new_tokens=12, seed=0), progress=False)
    assert again == [t for t, _ in pairs]  # a seed makes a collection reproducible
    teacher = collector.collect(TOY_ENV_ID, range(2), view="teacher", max_new_tokens=12, seed=0)
    assert all(t.source == "teacher" for t in teacher)


def test_for_policy_builds_an_hf_collector():
    policy = Policy(tiny_model("byte"), byte_tok(), frozen_teacher=False)
    c = Collector.for_policy(policy, progress=False, batch_size=8)
    assert isinstance(c.engine, HFEngine) and c.num_envs == 8 and c.renderer.eot_token == "<|im_end|>"
    with pytest.raises(ValueError, match="valid choices: hf, hf-generate, vllm"):
        Collector.for_policy(policy, engine="sglang")


def test_both_views_in_one_collection():
    """A step's teacher and student samples in lockstep: one engine call a round for both views, the same
    trajectories (greedy) as two collections, each with its own view's prompt and source."""
    import torch

    r = renderer_for("byte")
    model = tiny_model("byte", hidden=32, layers=2, mean_turn=6.0)
    policy = Policy(model, byte_tok())  # a frozen teacher copy; the student then moves away from it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine = HFEngine(policy, stop_ids=r.stop_ids)
    calls = []
    generate = engine.generate

    def spy(prompts, sampling, teacher=False):
        calls.append(teacher)
        return generate(prompts, sampling, teacher=teacher)

    engine.generate = spy
    collector = Collector(engine, r, progress=False)
    greedy = dict(temperature=0.0, max_new_tokens=16, max_turns=3)
    views = ["teacher", "student", "teacher", "teacher", "student"]
    tasks = [0, 0, 1, 2, 3]
    both = collector.collect(TOY_ENV_ID, tasks, view=views, **greedy)
    rounds = len(calls)
    assert any(isinstance(c, list) and len(set(c)) == 2 for c in calls)  # a round with both views in one call
    assert engine._decoder(model, False)._stack is not None  # and their weights ran stacked
    for view in ("teacher", "student"):
        rows = [i for i, v in enumerate(views) if v == view]
        alone = collector.collect(TOY_ENV_ID, [tasks[i] for i in rows], view=view, **greedy)
        for t, a in zip([both[i] for i in rows], alone):  # stacked products may round their last bits apart
            assert [s.ids for s in t.segments] == [s.ids for s in a.segments] and t.reward == a.reward
            assert [x for s in t.segments for x in s.logprobs or ()] == pytest.approx(
                [x for s in a.segments for x in s.logprobs or ()], abs=1e-4)
        assert all(t.source == view for t in alone)
    assert rounds < len(calls) - rounds  # the two collections alone took more engine calls
    for t in both:
        assert check_trajectory(t, r) == []


def test_both_views_with_an_engine_that_takes_one_view_per_call():
    collector, engine = oracle_collector("byte", range(4))
    trajs = collector.collect(TOY_ENV_ID, [0, 1, 2, 3], view=["student", "teacher", "teacher", "student"])
    assert [t.source for t in trajs] == ["student", "teacher", "teacher", "student"]
    assert all(isinstance(teacher, bool) for _, _, teacher in engine.calls)
    assert [t.success for t in trajs] == [True] * 4
    with pytest.raises(ValueError, match="one of them per task"):
        collector.collect(TOY_ENV_ID, [0, 1], view=["student"])
