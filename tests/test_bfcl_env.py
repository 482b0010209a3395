"""pbsd/BFCL-v0: loading, splits, oracle conformance on the reference BFCL files, irrelevance."""

import json
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import pbsd_agents  # noqa: F401  (registers the environments)
from pbsd_agents.envs import data
from pbsd_agents.envs.bfcl import BFCLEnv, category_of, first_acceptable_call
from pbsd_agents.tools.parsers import format_tool_calls

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")
# Tasks whose ground truth no call can meet (real errors in BFCL v3): gold function name absent.
KNOWN_DATA_ERRORS = {"simple_363"}


def make(**kw):
    return gymnasium.make("pbsd/BFCL-v0", **kw)


# ---- a tiny synthetic file, so the loader's logic is tested without the reference data ----------

FUNCS = [
    {"name": "math.factorial", "description": "Factorial.", "parameters": {"type": "dict", "properties": {
        "number": {"type": "integer", "description": "n"}}, "required": ["number"]}},
    {"name": "geo.area", "description": "Area.", "parameters": {"type": "dict", "properties": {
        "base": {"type": "float"}, "unit": {"type": "string"}, "tags": {"type": "tuple", "items": {"type": "string"}},
        "opts": {"type": "dict", "properties": {"fast": {"type": "boolean"}}}}, "required": ["base"]}},
]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path):
    rows, answers = [], []
    for i in range(10):
        rows.append({"id": f"live_parallel_multiple_{i}-0-0", "question": [[{"role": "user", "content": f"Factorial of {i} and area {i}"}]],
                     "function": FUNCS})
        answers.append({"id": f"live_parallel_multiple_{i}-0-0", "ground_truth": [
            {"math.factorial": {"number": [i]}},
            {"geo.area": {"base": [float(i)], "unit": ["", "m"], "tags": [["a", "b"]], "opts": ["", {"fast": [True]}]}}]})
    data = write_jsonl(tmp_path / "BFCL_v3_live_parallel_multiple.json", rows)
    write_jsonl(tmp_path / "possible_answer" / "BFCL_v3_live_parallel_multiple.json", answers)
    irr = write_jsonl(tmp_path / "BFCL_v3_irrelevance.json", [
        {"id": f"irrelevance_{i}", "question": [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]],
         "function": FUNCS[:1]} for i in range(5)])
    rel = write_jsonl(tmp_path / "BFCL_v3_live_relevance.json", [
        {"id": f"live_relevance_{i}-0-0", "question": [[{"role": "user", "content": "Area please"}]], "function": FUNCS[1:]}
        for i in range(5)])
    return {"dir": tmp_path, "data": data, "irrelevance": irr, "relevance": rel}


def test_no_data_path_says_what_to_pass():
    with pytest.raises(ValueError, match=r"needs category= \(one of simple_python, .*\) or data_path="):
        make()


def test_loader_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"missing\.json' is neither an existing file or folder .*; pass data_path= "):
        BFCLEnv(data_path=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="holdout_every must be a positive int or None, got 0"):
        BFCLEnv(data_path=tiny["data"], holdout_every=0)
    with pytest.raises(ValueError, match="holds no tasks"):
        BFCLEnv(data_path=tiny["data"], split="train", holdout_every=1)
    with pytest.raises(ValueError, match=r"answer_path '.*nope\.json' is not a file"):
        BFCLEnv(data_path=tiny["data"], answer_path=tmp_path / "nope.json")
    with pytest.raises(ValueError, match="split must be one of"):
        BFCLEnv(data_path=tiny["data"], split="all")
    lonely = write_jsonl(tmp_path / "other" / "BFCL_v3_simple.json", [
        {"id": "simple_0", "question": [[{"role": "user", "content": "x"}]], "function": FUNCS[:1]}])
    with pytest.raises(ValueError, match="pass answer_path="):
        BFCLEnv(data_path=lonely, split="test", holdout_every=1)
    java = write_jsonl(tmp_path / "j" / "BFCL_v3_java.json", [
        {"id": "java_0", "question": [[{"role": "user", "content": "x"}]], "function": FUNCS[:1]}])
    with pytest.raises(ValueError, match="unsupported category 'java'"):
        BFCLEnv(data_path=java, split="test", holdout_every=1)
    bad_type = write_jsonl(tmp_path / "t" / "BFCL_v3_irrelevance.json", [
        {"id": "irrelevance_0", "question": [[{"role": "user", "content": "x"}]],
         "function": [{"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "str"}}}}]}])
    with pytest.raises(ValueError, match="irrelevance_0.*unknown schema type 'str'"):
        BFCLEnv(data_path=bad_type, split="test", holdout_every=1)


def test_tiny_file_oracle_dotted_names_and_formats(tiny):
    for fmt in ("hermes", "json", "python"):
        for underscore in (False, True):
            env = make(data_path=tiny["data"], split="test", holdout_every=1, tool_format=fmt, underscore_names=underscore)
            assert env.unwrapped.num_tasks == 10
            for i in range(10):
                obs, info = env.reset(options={"index": i})
                assert info["category"] == "live_parallel_multiple"
                assert obs[0]["role"] == "system" and obs[1]["content"].startswith("Factorial")
                names = [t["function"]["name"] for t in info["tools"]]
                assert names == (["math_factorial", "geo_area"] if underscore else ["math.factorial", "geo.area"])
                _, reward, terminated, _, step_info = env.step(env.unwrapped.oracle_actions()[0])
                assert (reward, terminated, step_info["category"], step_info["error_type"]) == (1.0, True, "live_parallel_multiple", None)
    env = BFCLEnv(data_path=tiny["data"], split="test", holdout_every=1)
    env.reset(options={"index": 3})
    # tools are callable by the exact (dotted) name the schema gives
    assert env.toolbox.call("math.factorial", {"number": 3}).ok
    assert env.task.privileged == format_tool_calls([("math.factorial", {"number": 3}), ("geo.area", {"base": 3.0, "tags": ["a", "b"]})])


def test_tiny_file_wrong_answers(tiny):
    env = BFCLEnv(data_path=tiny["data"], split="test", holdout_every=1)
    cases = {
        format_tool_calls([("math.factorial", {"number": 2}), ("geo.area", {"base": 2, "tags": ["A", "b"], "opts": {"fast": True}})]): None,
        format_tool_calls([("geo.area", {"base": 2, "tags": ["a", "b"]}), ("math.factorial", {"number": 2})]): None,
        format_tool_calls([("math.factorial", {"number": 2})]): "wrong_count",
        format_tool_calls([("math.factorial", {"number": 3}), ("geo.area", {"base": 2.0, "tags": ["a", "b"]})]): "value_error",
        format_tool_calls([("math.factorial", {"number": 2}), ("geo.area", {"base": 2.0, "tags": ["b", "a"]})]): "value_error",
        format_tool_calls([("math.factorial", {"number": 2}), ("geo.area", {"base": 2.0})]): "missing_arg",
        format_tool_calls([("math.factorial", {"number": 2}), ("geo_area", {"base": 2.0, "tags": ["a", "b"]})]): "wrong_function",
        "Sorry, I can't.": "no_call",
        "<tool_call>{bad json}</tool_call>": "parse_error",
    }
    for action, expected in cases.items():
        env.reset(options={"index": 2})
        _, reward, *_, info = env.step(action)
        assert info["error_type"] == expected, (action, info)
        assert reward == (1.0 if expected is None else 0.0)


def test_irrelevance_and_relevance(tiny):
    env = make(data_path=tiny["irrelevance"], split="test", holdout_every=1)
    obs, info = env.reset(options={"index": 0})
    assert [m["role"] for m in obs] == ["system", "user"] and obs[0]["content"] == "Be brief."  # the data's own system prompt
    assert info["category"] == "irrelevance"
    _, reward, *_ = env.step(env.unwrapped.oracle_actions()[0])
    assert reward == 1.0
    env.reset(options={"index": 0})
    _, reward, *_, info = env.step(format_tool_calls([("math.factorial", {"number": 1})]))
    assert (reward, info["error_type"]) == (0.0, "unexpected_call")
    env.reset(options={"index": 0})
    _, reward, *_ = env.step("<tool_call>not json</tool_call>")  # an unreadable call is no call
    assert reward == 1.0
    env = make(data_path=tiny["relevance"], split="test", holdout_every=1)
    _, info = env.reset(options={"index": 1})
    assert info["category"] == "live_relevance"
    _, reward, *_ = env.step(env.unwrapped.oracle_actions()[0])
    assert reward == 1.0
    env.reset(options={"index": 1})
    _, reward, *_, info = env.step("No call.")
    assert (reward, info["error_type"]) == (0.0, "no_call")


def test_splits_every_fifth_line(tiny):
    test = BFCLEnv(data_path=tiny["data"], split="test")
    train = BFCLEnv(data_path=tiny["data"], split="train")
    assert [r["id"] for r in test.records] == ["live_parallel_multiple_4-0-0", "live_parallel_multiple_9-0-0"]
    assert len(train.records) == 8
    assert not {r["id"] for r in test.records} & {r["id"] for r in train.records}
    three = BFCLEnv(data_path=tiny["data"], split="test", holdout_every=3)
    assert [r["id"][len("live_parallel_multiple_"):] for r in three.records] == ["2-0-0", "5-0-0", "8-0-0"]
    whole = [BFCLEnv(data_path=tiny["data"], split=split, holdout_every=None).records for split in ("train", "test")]
    assert [r["id"] for r in whole[0]] == [r["id"] for r in whole[1]] == [f"live_parallel_multiple_{i}-0-0" for i in range(10)]


def test_several_files_folder_and_explicit_answers(tiny):
    env = BFCLEnv(data_path=[tiny["data"], tiny["irrelevance"]], split="test", holdout_every=1)
    assert [r["category"] for r in env.records] == ["live_parallel_multiple"] * 10 + ["irrelevance"] * 5
    folder = BFCLEnv(data_path=tiny["dir"], split="test", holdout_every=1)
    assert {r["category"] for r in folder.records} == {"live_parallel_multiple", "irrelevance", "live_relevance"}
    explicit = BFCLEnv(data_path=[tiny["data"]], answer_path=[tiny["dir"] / "possible_answer" / tiny["data"].name],
                       split="test", holdout_every=1)
    assert explicit.num_tasks == 10
    with pytest.raises(ValueError, match="same length"):
        BFCLEnv(data_path=[tiny["data"], tiny["irrelevance"]], answer_path="x.json")


def test_hugging_face_names(tiny, monkeypatch):
    with pytest.raises(ValueError, match="name the file inside"):
        BFCLEnv(data_path="gorilla-llm/Berkeley-Function-Calling-Leaderboard")

    def offline(repo_id, filename):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore lines")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(ValueError) as err:
        BFCLEnv(data_path="someone/bfcl/BFCL_v3_live_parallel_multiple.json")
    assert "Hugging Face Hub failed: ConnectionError: Failed to resolve 'huggingface.co'; pass data_path= " in str(err.value)
    assert "\n" not in str(err.value)

    fetched = []

    def fake(repo_id, filename):
        fetched.append((repo_id, filename))
        return tiny["dir"] / filename

    monkeypatch.setattr(data, "_download", fake)
    env = BFCLEnv(data_path="someone/bfcl/BFCL_v3_live_parallel_multiple.json", split="test", holdout_every=1)
    assert env.num_tasks == 10
    assert fetched == [("someone/bfcl", "BFCL_v3_live_parallel_multiple.json"),
                       ("someone/bfcl", "possible_answer/BFCL_v3_live_parallel_multiple.json")]


def test_check_env_and_seeds(tiny):
    for path in (tiny["data"], tiny["irrelevance"]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            env = make(data_path=path, split="test", holdout_every=1)
            env.reset(seed=0)
            env.step(env.unwrapped.oracle_actions()[0])  # through gymnasium's passive checker too
            check_env(env.unwrapped)
    a, b = make(data_path=tiny["data"], split="train"), make(data_path=tiny["data"], split="train")
    for seed in (0, 5, 99):
        assert a.reset(seed=seed) == b.reset(seed=seed)


def test_helpers():
    assert category_of("live_parallel_multiple_3-1-0") == "live_parallel_multiple"
    assert category_of("simple_python_4") == "simple_python"
    assert category_of("weird", "BFCL_v3_parallel.json") == "parallel"
    schema = {"name": "f", "parameters": {"type": "dict", "properties": {}, "required": ["r"]}}
    assert first_acceptable_call({"f": {"r": ["", True], "o": ["", 1], "p": [[]], "q": [[{"a": ["x"]}]]}}, schema) == (
        "f", {"r": True, "p": [], "q": [{"a": "x"}]})


# ---- the reference BFCL v3 files -----------------------------------------------------------------


def mutate_first_value(calls, gold):
    """Change one argument of one call to a value the gold rejects (None when the call has no argument)."""
    from pbsd_agents.envs.checker import _norm

    for (name, args), g in zip(calls, gold):
        ((_, params),) = g.items()
        for key in args:
            value = args[key]
            if isinstance(value, bool):
                new = not value
            elif isinstance(value, (int, float)):
                new = value + 7
            elif isinstance(value, str):
                new = value + "zq"
            elif isinstance(value, list):
                new = value + value[:1] if value else ["zq"]
            elif isinstance(value, dict):
                new = {**value, "zq_extra": 1}
            else:
                continue
            if _norm(new) in [_norm(a) for a in params[key]]:
                continue
            changed = [(n, dict(a)) for n, a in calls]
            changed[calls.index((name, args))][1][key] = new
            return changed
    return None


def test_reference_files_oracle_and_one_changed_value(shared_data):
    failures, mutated, mutated_zero = set(), 0, 0
    for cat in CATEGORIES:
        env = make(data_path=shared_data("bfcl", f"BFCL_v3_{cat}.json"), split="test", holdout_every=1)
        u = env.unwrapped
        for i in range(u.num_tasks):
            obs, info = env.reset(options={"index": i})
            assert info["category"] == cat
            _, reward, *_, step_info = env.step(u.oracle_actions()[0])
            if reward != 1.0:
                failures.add(info["task_id"])
                continue
            rec = u.records[i]
            by_name = {f["name"]: f for f in rec["functions"]}
            calls = [first_acceptable_call(g, by_name.get(next(iter(g)))) for g in rec["gold"]]
            changed = mutate_first_value(calls, rec["gold"])
            if changed is None:
                continue
            env.reset(options={"index": i})
            _, reward, *_ = env.step(format_tool_calls(changed))
            mutated += 1
            mutated_zero += reward == 0.0
        if cat == "simple":
            assert set(u.data_errors) == KNOWN_DATA_ERRORS
    assert failures == KNOWN_DATA_ERRORS
    assert mutated > 950 and mutated_zero / mutated >= 0.99, (mutated, mutated_zero)


def test_reference_irrelevance_no_call_scores_one(shared_data):
    env = make(data_path=shared_data("bfcl", "BFCL_v3_irrelevance.json"), split="test", holdout_every=1)
    assert env.unwrapped.num_tasks == 240
    for i in range(env.unwrapped.num_tasks):
        _, info = env.reset(options={"index": i})
        assert info["category"] == "irrelevance"
        _, reward, *_ = env.step("None of these functions can do that.")
        assert reward == 1.0


def test_reference_python_format_and_folder(shared_data):
    folder = shared_data("bfcl")
    env = make(data_path=folder, split="test", tool_format="python")
    u = env.unwrapped
    assert u.num_tasks == sum(len((folder / f).read_text().splitlines()) // 5 for f in
                              [f"BFCL_v3_{c}.json" for c in CATEGORIES + ("irrelevance",)])
    for i in range(u.num_tasks):
        env.reset(options={"index": i})
        action = u.oracle_actions()[0]
        if u.task.gold["mode"] != "irrelevance":
            assert action.startswith("[")
        _, reward, *_ = env.step(action)
        assert reward == 1.0, (u.task.task_id, action)


def test_reference_check_env(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = make(data_path=shared_data("bfcl", "BFCL_v3_simple.json"), split="test")
        env.reset(seed=0)
        env.step(env.unwrapped.oracle_actions()[0])
        check_env(env.unwrapped)


def test_reference_splits_disjoint(shared_data):
    path = shared_data("bfcl", "BFCL_v3_multiple.json")
    test, train = BFCLEnv(data_path=path, split="test"), BFCLEnv(data_path=path, split="train")
    ids_test, ids_train = {r["id"] for r in test.records}, {r["id"] for r in train.records}
    assert not ids_test & ids_train and len(ids_test) + len(ids_train) == 200
    assert all(int(i.rsplit("_", 1)[1]) % 5 == 4 for i in ids_test)
