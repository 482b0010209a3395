"""pbsd/ToolCall-v0: env checker, oracle replays, one changed value, determinism, disjoint splits."""

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import pbsd_agents  # noqa: F401  (registers the environments)
from pbsd_agents.envs import Transcript, toolcall
from pbsd_agents.envs.data import DisjointSplits
from pbsd_agents.envs.toolcall import CATALOG, ToolCallEnv
from pbsd_agents.tools.parsers import ParsedCall, format_tool_calls, parse_tool_calls


def make(**kw):
    return gymnasium.make("pbsd/ToolCall-v0", **kw)


@pytest.mark.parametrize("split", ["train", "test"])
def test_check_env_without_warnings(split):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(split=split)
        env.reset(seed=0)
        env.step(env.unwrapped.oracle_actions()[0])  # through gymnasium's passive checker too
        check_env(env.unwrapped)


def test_catalog_covers_the_types():
    assert len(CATALOG) >= 15
    seen = set()

    def walk(spec):
        seen.add(spec.get("type"))
        if "enum" in spec:
            seen.add("enum")
        if "default" in spec:
            seen.add("default")
        for sub in spec.get("properties", {}).values():
            walk(sub)
        if "items" in spec:
            walk(spec["items"])

    for _, _, params, _ in CATALOG:
        for spec in params["properties"].values():
            walk(spec)
    assert {"string", "integer", "number", "boolean", "array", "object", "enum", "default"} <= seen


def mutate(value):
    """A value of the same type that the gold (a single alternative per given argument) rejects."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + " extra"
    if isinstance(value, list):
        return value + value[:1] if value else ["x"]
    if isinstance(value, dict):
        k = next(iter(value))
        return {**value, k: mutate(value[k])}
    raise AssertionError(value)


@pytest.mark.parametrize("fmt", ["hermes", "json", "python"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_oracle_scores_one_and_one_changed_value_scores_zero(fmt, split):
    env = make(split=split, tool_format=fmt)
    for i in range(200):
        obs, info = env.reset(options={"index": i})
        assert info["privileged"] not in str(obs)
        oracle = env.unwrapped.oracle_actions()
        assert oracle == [info["privileged"]]
        _, reward, terminated, truncated, step_info = env.step(oracle[0])
        assert (reward, terminated, truncated) == (1.0, True, False), (obs, oracle, step_info)
        assert step_info["success"] and step_info["error_type"] is None
        # the same calls with one value changed
        calls = [(c.name, dict(c.arguments)) for c in parse_tool_calls(oracle[0], fmt)]
        name, args = calls[-1]
        key = sorted(args)[i % len(args)]
        args[key] = mutate(args[key])
        env.reset(options={"index": i})
        _, reward, *_, step_info = env.step(format_tool_calls(calls, fmt))
        assert reward == 0.0 and step_info["error_type"] == "value_error", (calls, step_info)


def test_variants_and_their_shape():
    for variant, n_tools, n_calls in (("single", {1}, {1}), ("multiple", {3, 4, 5}, {1}), ("parallel", set(range(1, 6)), {2, 3})):
        env = make(split="test", variants=(variant,))
        for i in range(40):
            _, info = env.reset(options={"index": i})
            assert info["variant"] == variant
            assert len(info["tools"]) in n_tools
            assert len(env.unwrapped.task.gold) in n_calls
    env = make(variants="parallel")
    assert env.unwrapped.variants == ("parallel",)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"variants must be a non-empty subset of \['single', 'multiple', 'parallel'\], got \['serial'\]"):
        ToolCallEnv(variants=("serial",))
    with pytest.raises(ValueError, match="variants"):
        ToolCallEnv(variants=())
    with pytest.raises(ValueError, match="num_test_tasks"):
        ToolCallEnv(num_test_tasks=0)
    with pytest.raises(ValueError, match="split must be one of"):
        ToolCallEnv(split="dev")
    env = ToolCallEnv(split="test")
    with pytest.raises(ValueError, match=r"0\.\.199"):
        env.reset(options={"index": 200})


def test_splits_sizes_and_disjointness():
    test_env, train_env = ToolCallEnv(split="test"), ToolCallEnv(split="train")
    assert test_env.num_tasks == 200 and train_env.num_tasks is None
    assert test_env._tasks is train_env._tasks  # one setting, one set of test keys
    assert test_env.splits == ("train", "test")  # the contract's split names stay the class attribute
    test_fps = test_env._tasks.test_keys()
    assert len(test_fps) > 190  # the test tasks are (almost all) distinct
    for i in range(2000):
        task = train_env.make_task(i * 7919)
        assert train_env._tasks.fingerprint((task.messages[1]["content"], task.gold)) not in test_fps


def test_train_draw_that_equals_a_test_task_is_redrawn(monkeypatch):
    env = ToolCallEnv(split="train")
    real = env._tasks.draw

    def draw(split, index, attempt):  # the only test task is train draw (5, 0)
        return real("train", 5, 0) if split == "test" else real(split, index, attempt)

    monkeypatch.setattr(env, "_tasks", DisjointSplits(draw, env._tasks.key, test_size=1))
    request, gold, *_ = real("train", 5, 0)
    task = env.make_task(5)
    assert task.messages[1]["content"] != request or task.gold != gold
    redrawn, gold1, *_ = real("train", 5, 1)
    assert (task.messages[1]["content"], task.gold) == (redrawn, gold1)


def test_disjoint_splits_with_distinct_test_tasks():
    splits = DisjointSplits(lambda split, i, attempt: (i // 2 + attempt) if split == "test" else i + attempt,
                            key=lambda task: task, test_size=3, distinct_test=True)
    assert [splits.task("test", i) for i in range(3)] == [0, 1, 2]  # test draws 0,0,1,1,2: repeats skipped
    assert [splits.task("train", i) for i in range(5)] == [3, 3, 3, 3, 4]


def test_seeds_are_deterministic():
    a, b = make(), make()
    for seed in (0, 1, 123):
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        assert oa == ob and ia == ib
    runs = [[make().reset(seed=7)[1]["task_id"]] for _ in range(2)]
    assert runs[0] == runs[1]
    # A task is a function of (split, index) alone.
    assert ToolCallEnv().make_task(42).messages == ToolCallEnv().make_task(42).messages


def test_failures_report_error_type():
    env = make(split="test", variants=("multiple",))
    env.reset(options={"index": 0})
    gold = env.unwrapped.task.gold[0]
    wrong = next(t["function"]["name"] for t in env.unwrapped.toolbox.schemas() if t["function"]["name"] not in gold)
    cases = {
        "I cannot help.": "no_call",
        '<tool_call>{"name": </tool_call>': "parse_error",
        format_tool_calls([(wrong, {})]): "wrong_function",
    }
    for action, expected in cases.items():
        env.reset(options={"index": 0})
        _, reward, terminated, _, info = env.step(action)
        assert (reward, terminated, info["error_type"]) == (0.0, True, expected)
        assert info["check_message"]


def test_optional_arguments_may_be_omitted_or_default_and_ints_are_numbers():
    env = ToolCallEnv(split="test", variants=("single",))
    env.reset(options={"index": 0})
    schema_by_name = {name: params for name, _, params, _ in CATALOG}
    for i in range(60):
        env.reset(options={"index": i})
        ((name, params),) = env.task.gold[0].items()
        call = parse_tool_calls(env.oracle_actions()[0])[0]
        args = dict(call.arguments)
        for p, spec in schema_by_name[name]["properties"].items():
            if p not in args and "default" in spec:
                args[p] = spec["default"]  # spelling out a default is fine
            if spec.get("type") == "number" and p in args and float(args[p]).is_integer():
                args[p] = int(args[p])  # 250 where 250.0 is expected
        reward, info = env.score(Transcript([], "", [ParsedCall(name, args, (0, 0))], []))
        assert reward == 1.0, (args, info)


def test_score_hook_gets_the_episode_and_must_return_reward_and_info():
    seen = []

    class Spy(ToolCallEnv):
        def score(self, transcript):
            seen.append(transcript)
            return super().score(transcript)

    env = Spy(split="test", tool_format="hermes")
    obs, info = env.reset(options={"index": 0})
    assert info["tool_format"] == "hermes" and info["variant"] in toolcall.VARIANTS
    action = env.oracle_actions()[0] + "\n<tool_call>{bad json}</tool_call>"
    _, reward, *_, step_info = env.step(action)
    (t,) = seen
    assert t.messages == obs + [{"role": "assistant", "content": action}] and t.final_text == action
    assert t.calls == [r for r in parse_tool_calls(action) if isinstance(r, ParsedCall)] and len(t.calls) >= 1
    assert [e.message[:12] for e in t.parse_errors] == ["invalid JSON"]
    assert (reward, step_info["error_type"]) == (0.0, "parse_error")

    class Broken(ToolCallEnv):
        def score(self, transcript):
            return 0.5

    env = Broken(split="test")
    env.reset(options={"index": 0})
    with pytest.raises(TypeError, match=r"^Broken\.score\(\) must return \(reward, info\), got 0\.5$"):
        env.step("no call")


def test_tools_acknowledge():
    assert toolcall._tool("get_weather").call({"city": "Paris"}).content == "get_weather: done"
