"""Math environments: answer helpers and grading, pbsd/MathCalc-v0, pbsd/GSM8K-v0 and pbsd/MATH-v0."""

import json
import random
import sys
import warnings
from fractions import Fraction

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import pbsd_agents  # noqa: F401  (registers the pbsd/ environments)
from pathlib import Path

from pbsd_agents.envs.answers import (answers_match, calculator_oracle, grade_answer, last_boxed, parse_number,
                                     score_answer)
from pbsd_agents.envs.math_problems import MATHEnv
from pbsd_agents.envs.gsm8k import GSM8KEnv, annotations, rewrite_annotations, split_solution
from pbsd_agents.envs.mathcalc import SPLITS, TEST_SIZE, MathCalcEnv
from pbsd_agents.tools.calculator import calculate
from pbsd_agents.tools.parsers import parse_tool_calls

def replay(env, actions):
    """Step through ``actions``; return the last step's (reward, terminated, truncated, info) and the tool outputs."""
    outputs = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        outputs += [m["content"] for m in obs]
        if terminated or truncated:
            return reward, terminated, truncated, info, outputs
    raise AssertionError("the episode did not end")


# ---- answers -------------------------------------------------------------------------------------


def test_last_boxed():
    assert last_boxed(r"\boxed{1} then \boxed{2}") == "2"
    assert last_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{3} and an unfinished \boxed{4") == "3"
    assert last_boxed(r"\boxed { 7 }") == "7"
    assert last_boxed("nothing") is None and last_boxed(None) is None


@pytest.mark.parametrize(
    "text, value",
    [("18", 18), ("1,080", 1080), ("1,000,000", 10**6), ("$5", 5), (r"\$5.00", 5), ("7.0", 7), ("3/4", Fraction(3, 4)),
     (r"\frac{3}{4}", Fraction(3, 4)), ("-2", -2), ("0.5", Fraction(1, 2)), ("45%", 45), (r"45\%", 45),
     ("12 apples", 12), (r"12 \text{ dollars}", 12), ("x = 5", 5), ("5.", 5), (".25", Fraction(1, 4)),
     ("\u22123", -3), ("70{,}000", 70000), ("70 000", 70000), (r"70\,000", 70000), ("70\u2009000", 70000),
     ("1 234 567.5", Fraction(2469135, 2)), (r"\$70{,}000.00", 70000), ("1 000 apples", 1000)],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "five", "1, 2", "3/0", "1/2/3", "2 or 3", "1" * 300, "1e5x5", "1 2", "70 00",
                                  "1 0000"])
def test_parse_number_rejects(text):
    assert parse_number(text) is None


def test_answers_match_and_score():
    assert answers_match("1,080", "1080") and answers_match("0.75", "3/4") and not answers_match("0.333", "1/3")
    assert score_answer(r"so \boxed{$1,080.00}.", "1080")[0] == 1.0
    assert score_answer(r"\boxed{1081}", "1080")[0] == 0.0
    assert score_answer("1080", "1080")[0] == 0.0  # an answer must be boxed


def test_calculator_oracle_packs_calls_into_the_turn_limit():
    turns = calculator_oracle(["1+1", "2+2", "3+3"], 6, "hermes", max_turns=3)
    assert len(turns) == 3 and turns[-1] == r"The answer is \boxed{6}."
    assert [len(parse_tool_calls(t)) for t in turns] == [2, 1, 0]
    assert calculator_oracle(["1+1"], 2, "hermes", max_turns=1) == [r"The answer is \boxed{2}."]


# ---- MathCalc ------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_mathcalc_check_env(split):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gymnasium.make("pbsd/MathCalc-v0", split=split)
        check_env(env.unwrapped)


def test_mathcalc_seeds_are_deterministic():
    a, b = gymnasium.make("pbsd/MathCalc-v0"), gymnasium.make("pbsd/MathCalc-v0")
    for seed in range(20):
        obs_a, info_a = a.reset(seed=seed)
        obs_b, info_b = b.reset(seed=seed)
        assert obs_a == obs_b and info_a == info_b
    questions = {a.reset(seed=s)[0][1]["content"] for s in range(50)}
    assert len(questions) > 45
    # a task index names the same task in a fresh env
    assert a.reset(options={"index": 123})[0] == gymnasium.make("pbsd/MathCalc-v0").reset(options={"index": 123})[0]


def test_mathcalc_splits_and_num_tasks():
    train = gymnasium.make("pbsd/MathCalc-v0").unwrapped
    test = gymnasium.make("pbsd/MathCalc-v0", split="test").unwrapped
    assert train.num_tasks is None and test.num_tasks == TEST_SIZE == 200
    test_questions = {test.reset(options={"index": i})[0][1]["content"] for i in range(TEST_SIZE)}
    assert len(test_questions) == TEST_SIZE and test_questions == {json.loads(key) for key in SPLITS.test_keys()}
    train_questions = {train.draw(i)[1] for i in range(3000)}
    assert not train_questions & test_questions
    with pytest.raises(ValueError, match="199"):
        test.reset(options={"index": 200})


@pytest.mark.parametrize("split, n", [("train", 200), ("test", TEST_SIZE)])
def test_mathcalc_oracle_replay_succeeds(split, n):
    env = gymnasium.make("pbsd/MathCalc-v0", split=split)
    for i in range(n):
        obs, info = env.reset(options={"index": i})
        actions = env.unwrapped.oracle_actions()
        assert 3 <= len(actions) <= 5  # 2 to 4 calculator calls, then the answer
        reward, terminated, truncated, info, outputs = replay(env, actions)
        assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True), (i, actions, outputs)
        assert outputs and all(o.startswith("result = ") for o in outputs)


@pytest.mark.parametrize("fmt", ["json", "python"])
def test_mathcalc_oracle_in_other_tool_formats(fmt):
    env = gymnasium.make("pbsd/MathCalc-v0", tool_format=fmt)
    for i in range(30):
        env.reset(options={"index": i})
        assert replay(env, env.unwrapped.oracle_actions())[0] == 1.0


def test_mathcalc_task_properties():
    env = MathCalcEnv()
    for i in range(300):
        obs, info = env.reset(options={"index": i})
        task = env.task
        assert isinstance(task.gold, int) and 0 < task.gold < 10_000
        assert rf"\boxed{{{task.gold}}}" in info["privileged"] and "calculator(" in info["privileged"]
        assert all(info["privileged"] not in m["content"] for m in obs)
        assert "Use the calculator tool" in obs[0]["content"] and len(obs[1]["content"]) < 400
        assert info["tools"][0]["function"]["name"] == "calculator"
        steps = env.draw(i)[2]
        assert 2 <= len(steps) <= 4 and steps[-1][1] == task.gold
        assert all(calculate(e) == f"result = {v}" for e, v in steps)  # every division exact, every value integral


def test_mathcalc_wrong_or_missing_answer_scores_zero():
    env = gymnasium.make("pbsd/MathCalc-v0")
    env.reset(seed=1)
    answer = env.unwrapped.task.gold
    _, reward, terminated, _, info = env.step(rf"The answer is \boxed{{{answer + 1}}}.")
    assert (reward, terminated, info["success"]) == (0.0, True, False)
    env.reset(seed=1)
    assert env.step(f"The answer is {answer}.")[1] == 0.0
    env.reset(seed=1)
    assert env.step(rf"\boxed{{{answer}.0}}")[1] == 1.0


def test_mathcalc_turn_limit():
    env = gymnasium.make("pbsd/MathCalc-v0", max_turns=2)
    env.reset(options={"index": 0})
    actions = env.unwrapped.oracle_actions()
    assert len(actions) == 2 and replay(env, actions)[0] == 1.0  # calls packed into one turn
    env.reset(options={"index": 0})
    call = actions[0]
    env.step(call)
    _, reward, terminated, truncated, info = env.step(call)
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, True, False)


def test_mathcalc_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'dev'"):
        MathCalcEnv(split="dev")
    with pytest.raises(ValueError, match="'yaml'"):
        MathCalcEnv(tool_format="yaml")


# ---- GSM8K: without the data set -----------------------------------------------------------------

RECORDS = [
    {"question": f"Question {i}: what is {i} times 3, plus 1,000?",
     "answer": f"{i} times 3 is <<{i}*3={i * 3}>>{i * 3}.\nPlus 1000 is {i * 3}+1000 = $<<{i * 3}+1000={i * 3 + 1000}>>"
               f"{i * 3 + 1000}.\n#### {i * 3 + 1000:,}"}
    for i in range(25)
]


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    return path


def test_gsm8k_holdout(small_file):
    train = GSM8KEnv(data_path=small_file)
    test = GSM8KEnv(data_path=small_file, split="test")
    assert (train.num_tasks, test.num_tasks) == (23, 2)  # records 10 and 20 are held out
    assert [r["question"] for r in test.records] == [RECORDS[9]["question"], RECORDS[19]["question"]]
    assert GSM8KEnv(data_path=small_file, split="test", holdout_every=None).num_tasks == 25
    assert GSM8KEnv(data_path=small_file, split="train", holdout_every=None).num_tasks == 25
    assert GSM8KEnv(data_path=small_file, split="test", holdout_every=5).num_tasks == 5
    assert GSM8KEnv(data_path=small_file, split="test", holdout_every=1).num_tasks == 25


def test_gsm8k_small_file_episode(small_file):
    env = gymnasium.make("pbsd/GSM8K-v0", data_path=str(small_file), holdout_every=None)
    obs, info = env.reset(options={"index": 7})
    assert obs[1]["content"] == RECORDS[7]["question"]
    assert info["privileged"] == "7 times 3 is 7*3 = 21.\nPlus 1000 is 21+1000 = $1021.\nAnswer: \\boxed{1021}"
    actions = env.unwrapped.oracle_actions()
    assert len(actions) == 3 and actions[-1] == r"The answer is \boxed{1021}."
    reward, _, _, info, outputs = replay(env, actions)
    assert reward == 1.0 and outputs == ["result = 21", "result = 1021"]
    env.reset(options={"index": 7})
    assert env.step(r"\boxed{1,021}")[1] == 1.0
    env.reset(options={"index": 7})
    assert env.step(r"\boxed{1022}")[1] == 0.0


def test_gsm8k_without_calculator(small_file):
    env = GSM8KEnv(data_path=small_file, use_calculator=False)
    obs, info = env.reset(options={"index": 0})
    assert info["tools"] == [] and "calculator" not in obs[0]["content"]
    assert env.oracle_actions() == [r"The answer is \boxed{1000}."]


def test_gsm8k_bad_arguments(tmp_path, small_file):
    with pytest.raises(ValueError, match="needs data_path="):
        GSM8KEnv()
    with pytest.raises(ValueError, match=r"no_such_file\.jsonl' is neither an existing file or folder .*; pass data_path= "):
        GSM8KEnv(data_path=tmp_path / "no_such_file.jsonl")
    with pytest.raises(ValueError, match="is a folder"):
        GSM8KEnv(data_path=tmp_path)
    with pytest.raises(ValueError, match="'dev'"):
        GSM8KEnv(data_path=small_file, split="dev")
    with pytest.raises(ValueError, match="use_calculator"):
        GSM8KEnv(data_path=small_file, use_calculator="yes")
    with pytest.raises(ValueError, match="holdout_every must be a positive int or None"):
        GSM8KEnv(data_path=small_file, holdout_every="auto")
    with pytest.raises(ValueError, match="holdout_every must be a positive int or None"):
        GSM8KEnv(data_path=small_file, holdout_every=0)
    with pytest.raises(ValueError, match="no records for split 'train'"):
        GSM8KEnv(data_path=small_file, holdout_every=1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps({"question": "q", "answer": "no final line"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, record 2: .*####"):
        GSM8KEnv(data_path=bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        GSM8KEnv(data_path=bad)
    bad.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + b'{"question": "\xff"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not UTF-8 text"):  # the file and the line are named
        GSM8KEnv(data_path=bad)


def test_gsm8k_hub_name_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as on a machine without it (import raises ImportError)
    with pytest.raises(ValueError, match=r"^data_path 'openai/gsm8k' .*needs datasets \(pip install datasets\); pass data_path= "):
        GSM8KEnv(data_path="openai/gsm8k")


def test_annotation_rewriting():
    assert rewrite_annotations("Natalia sold 48/2 = <<48/2=24>>24 clips.") == "Natalia sold 48/2 = 24 clips."
    assert rewrite_annotations("He writes 3*2=<<3*2=6>>6 pages") == "He writes 3*2=6 pages"
    assert rewrite_annotations("earns 0.2 x 50 = $<<0.2*50=10>>10.") == "earns 0.2 x 50 = $10."
    assert rewrite_annotations("so <<5*3=15>>15 apples") == "so 5*3 = 15 apples"
    assert rewrite_annotations("costs $<<5*3=15>>15") == "costs 5*3 = $15"
    assert rewrite_annotations("is <<12=12>>12 miles") == "is 12 miles"
    assert rewrite_annotations("X+<<+10=10>>10") == "X+10"
    assert annotations("a <<1+1=2>>2 b <<7=7>>7 c <<broken>>") == [("1+1", "2")]
    assert split_solution("x\n#### 1,080") == ("x", "1,080")


# ---- GSM8K: the real data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_envs(shared_data):
    path = shared_data("gsm8k", "train.jsonl")
    return {split: gymnasium.make("pbsd/GSM8K-v0", data_path=str(path), split=split) for split in ("train", "test")}


def _gold_scores(env, indices):
    for i in indices:
        env.reset(options={"index": i})
        record = env.unwrapped.records[i]
        gold = split_solution(record["answer"])[1]
        _, reward, terminated, _, info = env.step(rf"The answer is \boxed{{{gold}}}.")
        assert (reward, terminated, info["success"]) == (1.0, True, True), (i, gold)


def test_gsm8k_split_sizes(gsm8k_envs):
    train, test = gsm8k_envs["train"].unwrapped, gsm8k_envs["test"].unwrapped
    assert (train.num_tasks, test.num_tasks) == (6726, 747)
    train_q = {r["question"] for r in train.records}
    assert not any(r["question"] in train_q for r in test.records)


def test_gsm8k_check_env(gsm8k_envs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gsm8k_envs["test"].unwrapped)


def test_gsm8k_gold_answers_score_one_sample(gsm8k_envs):
    rng = random.Random(0)
    for split, n in (("train", 250), ("test", 50)):
        env = gsm8k_envs[split]
        _gold_scores(env, rng.sample(range(env.unwrapped.num_tasks), n))


@pytest.mark.slow
def test_gsm8k_gold_answers_score_one_all(gsm8k_envs):
    for env in gsm8k_envs.values():
        _gold_scores(env, range(env.unwrapped.num_tasks))


def test_gsm8k_oracle_replay_with_calculator(gsm8k_envs):
    env = gsm8k_envs["train"]
    for i in random.Random(1).sample(range(env.unwrapped.num_tasks), 100):
        obs, info = env.reset(options={"index": i})
        assert "<<" not in info["privileged"] and info["privileged"].endswith("}")
        actions = env.unwrapped.oracle_actions()
        reward, terminated, truncated, info, outputs = replay(env, actions)
        assert reward == 1.0, (i, actions)
        assert len(outputs) == len(actions) - 1 and all(o.startswith("result = ") for o in outputs)


# ---- grading: math-verify beyond plain numbers -----------------------------------------------------


@pytest.mark.parametrize("predicted, gold", [
    ("70{,}000", "70000"), ("70 000", "70000"), (r"70\,000", "70000"), (r"7 \times 10^4", "70000"),
    (r"\dfrac{3}{4}", "0.75"), (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), ("[-2,4]", "[-2, 4]"),
    ("1 + 2x + x^2", "x^2 + 2x + 1"), (r"\text{(A)}", r"\text{(A)}"), ("(3, 4)", "(3,4)"), (r"\frac13", "1/3"),
])
def test_grade_accepts_equivalent_forms(predicted, gold):
    assert grade_answer(predicted, gold)


@pytest.mark.parametrize("predicted, gold", [
    ("69,999", "70000"), ("0.333", "1/3"), (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{2}}{2}"), ("[-2, 4)", "[-2, 4]"),
    ("x^2 + 1", "x^2 + 2x + 1"), (r"\text{(B)}", r"\text{(A)}"), ("", "5"), ("1" * 3000, "1"), ("(4, 3)", "(3, 4)"),
])
def test_grade_rejects_wrong_answers(predicted, gold):
    assert not grade_answer(predicted, gold)


def test_gsm8k_thousands_forms_score_one(gsm8k_envs):
    """Every gold >= 1,000 of GSM8K written 70{,}000 or 70 000 (the forms a model writes) is correct."""
    env = gsm8k_envs["train"]
    checked = 0
    for i, record in enumerate(env.unwrapped.records):
        value = parse_number(split_solution(record["answer"])[1])
        if value.denominator != 1 or abs(value) < 1000:
            continue
        for form in (f"{int(value):,}".replace(",", "{,}"), f"{int(value):,}".replace(",", " "),
                     f"{int(value):,}".replace(",", "\\,")):
            reward, _ = score_answer(rf"The answer is \boxed{{{form}}}.", split_solution(record["answer"])[1])
            assert reward == 1.0, (i, form)
        checked += 1
    assert checked > 300


# ---- MATH-v0 ---------------------------------------------------------------------------------------

MATH_FILE = Path(__file__).parent / "data" / "math_small.jsonl"
# index -> (an equivalent answer a model may write, a wrong one)
MATH_FORMS = {0: ("23.0", "24"), 1: ("0.75", r"\frac{4}{3}"), 3: (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{3}}{2}"),
              4: ("[-2,4]", "(-2, 4)"), 5: ("(x+1)^2", "x^2+1"), 7: ("70 000", "7000"), 9: ("1/3", "0.33"),
              10: (r"\text{(A)}", r"\text{(B)}")}


def make_math(**kwargs) -> MATHEnv:
    kwargs.setdefault("holdout_every", None)
    return gymnasium.make("pbsd/MATH-v0", data_path=str(MATH_FILE), **kwargs).unwrapped


def test_math_check_env():
    from pbsd_agents.testing import check_env as kit_check_env

    for kwargs in ({}, {"use_calculator": True}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            report = kit_check_env(gymnasium.make("pbsd/MATH-v0", data_path=str(MATH_FILE), holdout_every=None, **kwargs))
        assert report.ok and report.oracle_episodes > 0


def test_math_tasks_and_grading():
    env = make_math()
    assert env.num_tasks == 12
    obs, info = env.reset(options={"index": 3})
    assert info["category"] == "Precalculus" and info["privileged"].startswith("In a right isosceles")
    assert info["privileged"] not in json.dumps(obs) and info["tools"] == []
    env.reset(options={"index": 8})  # no "answer" field: the solution's last \boxed{}
    assert env.task.gold == "5" and "category" not in env.task.info
    for i, (right, wrong) in MATH_FORMS.items():
        for answer, reward in ((right, 1.0), (wrong, 0.0)):
            env.reset(options={"index": i})
            _, r, terminated, _, info = env.step(rf"So the answer is $\boxed{{{answer}}}$.")
            assert terminated and r == reward and info["predicted"] == answer, (i, answer)
    calc = make_math(use_calculator=True)
    obs, info = calc.reset(options={"index": 0})
    assert [t["function"]["name"] for t in info["tools"]] == ["calculator"]


def test_math_splits_and_errors(tmp_path):
    assert (make_math(split="train", holdout_every=4).num_tasks, make_math(split="test", holdout_every=4).num_tasks) == (9, 3)
    with pytest.raises(ValueError, match="needs data_path="):
        MATHEnv()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl, record 1: no 'answer' field and no \\boxed"):
        MATHEnv(data_path=bad, holdout_every=None)
    bad.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match="'problem' and 'solution'"):
        MATHEnv(data_path=bad, holdout_every=None)
    with pytest.raises(ValueError, match="use_calculator"):
        MATHEnv(data_path=MATH_FILE, use_calculator=1)


def test_math_hub_name_needs_datasets(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "datasets", None)  # as on a machine without it
        with pytest.raises(ValueError, match=r"^data_path 'HuggingFaceH4/MATH-500' .*needs datasets \(pip install datasets\)"):
            MATHEnv(data_path="HuggingFaceH4/MATH-500", hf_split="test")
