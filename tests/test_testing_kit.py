"""The env-author test kit: it passes good environments, fails broken ones, and runs on every pbsd/ env."""

import random
import time
from pathlib import Path

import gymnasium as gym
import pytest

from pbsd_agents.envs import ChatToolEnv, Task
from pbsd_agents.testing import ADVERSARIAL_TEMPLATES, CheckReport, buildable_env_ids, check_env, fuzz_actions, registered_env_ids
from pbsd_agents.tools import Tool, format_tool_call
from scripts import custom_env_example as example

NUM_FUZZ = 1000  # what the issue asks of every env; each env takes a few seconds at most

LibraryEnv = example.LibraryEnv


# ---- the kit passes good environments ------------------------------------------------------------


def test_kit_passes_the_custom_env_example():
    report = check_env(gym.make(example.ENV_ID), num_fuzz=NUM_FUZZ)
    print(report)
    assert report.ok and report.errors == []
    assert report.fuzz_steps == NUM_FUZZ and report.fuzz_episodes > 0
    assert set(report.fuzz_by_kind) == {"adversarial", "oracle_mutation", "schema_call", "random_text"}
    assert report.fuzz_by_kind["adversarial"] == len(ADVERSARIAL_TEMPLATES)  # every hand-written case ran
    assert report.oracle_episodes == 3


def test_the_readme_example_is_the_tested_file():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    section = root.joinpath("README.md").read_text().split("## Write and test your own environment")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks and "class LibraryEnv(ChatToolEnv)" in blocks[0] and "def score(self, transcript" in blocks[0]
    assert blocks[0] in root.joinpath("scripts", "custom_env_example.py").read_text()


@pytest.mark.parametrize("tool_format", ["json", "python"])
def test_kit_passes_the_example_unregistered_in_other_formats(tool_format):
    report = check_env(LibraryEnv(tool_format=tool_format), num_fuzz=200, oracle_tasks=[0, 5, 99])
    assert report.ok and report.oracle_episodes == 3


def test_check_env_accepts_an_id_and_is_reproducible():
    a = check_env(example.ENV_ID, num_fuzz=100, seed=7)
    b = check_env(example.ENV_ID, num_fuzz=100, seed=7)
    assert (a.fuzz_steps, a.fuzz_episodes, a.fuzz_by_kind) == (b.fuzz_steps, b.fuzz_episodes, b.fuzz_by_kind)
    assert "fuzz 100 steps" in str(a)


def test_fuzz_actions_are_seeded_and_mixed():
    tools = LibraryEnv().reset(seed=0)[1]["tools"]
    acts = fuzz_actions(seed=3, n=300, tools=tools, oracle=[format_tool_call("get_shelf", {"book_id": "B1"})])
    assert acts == fuzz_actions(seed=3, n=300, tools=tools, oracle=[format_tool_call("get_shelf", {"book_id": "B1"})])
    assert acts != fuzz_actions(seed=4, n=300, tools=tools)
    assert any(len(a) >= 1_000_000 for a in acts)  # huge inputs
    assert any("search_catalog" in a and "<tool_call>" in a for a in acts)  # calls to real tools
    assert any("__import__" in a for a in acts) and any("<|im_end|>" in a for a in acts)


def test_fuzz_is_fast():
    t0 = time.perf_counter()
    check_env(LibraryEnv(), num_fuzz=NUM_FUZZ, gym_check=False)
    assert time.perf_counter() - t0 < 20


# ---- the kit fails broken environments -----------------------------------------------------------


class LeakyEnv(LibraryEnv):
    """Puts the privileged plan into the system prompt."""

    def make_task(self, index):
        task = super().make_task(index)
        task.messages[0]["content"] += " Hint: " + task.privileged
        return task


class LeakyToolEnv(LibraryEnv):
    """A tool that hands the student the teacher's context."""

    def make_task(self, index):
        task = super().make_task(index)
        secret = task.privileged
        task.tools.append(Tool("hint", "Get a hint.", {"type": "object"}, lambda: secret))
        return task


class RandomResetEnv(LibraryEnv):
    """Draws the task from the global RNG instead of the seeded one."""

    def make_task(self, index):
        return super().make_task(random.randrange(self.num_tasks))


class WrongOracleEnv(LibraryEnv):
    def make_task(self, index):
        task = super().make_task(index)
        task.oracle[-1] = "I could not find it."
        return task


class ShortOracleEnv(LibraryEnv):
    """An oracle that stops before the episode is over."""

    def make_task(self, index):
        task = super().make_task(index)
        task.oracle = task.oracle[:1]
        return task


class CrashingScoreEnv(LibraryEnv):
    """Reads the final answer carelessly: most text makes score() raise."""

    def score(self, transcript):
        int(transcript.final_text.split()[-1].strip("."), 36)
        return super().score(transcript)


class FloatScoreEnv(LibraryEnv):
    """Returns a bare reward from score(), as an old README said to."""

    def score(self, transcript):
        return super().score(transcript)[0]


class CrashOnBraceEnv(LibraryEnv):
    def step(self, action):
        if action.count("{") > 100:
            raise RecursionError("too deep")
        return super().step(action)


class BadStepEnv(LibraryEnv):
    """Returns an int reward and a numpy bool, and forgets the parse-error count."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info.pop("num_parse_errors")
        return obs, int(reward), terminated, truncated, info


class BadSchemaEnv(LibraryEnv):
    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        info["tools"] = info["tools"] + [{"name": "loose", "parameters": {"type": "object"}}]
        return obs, info


class NoTeacherEnv(LibraryEnv):
    def teacher_messages(self, messages, privileged):
        return messages


@pytest.mark.parametrize(
    "env_cls, pattern",
    [
        (LeakyEnv, r"privileged text .* appears in the student's messages"),
        (LeakyToolEnv, r"privileged text .* appears in the observation"),
        (RandomResetEnv, r"reset\(seed=\d+\) twice gave different"),
        (WrongOracleEnv, r"the oracle did not solve the task"),
        (ShortOracleEnv, r"not over after the oracle's 1 turn"),
        (CrashingScoreEnv, r"step raised ValueError"),
        (FloatScoreEnv, r"FloatScoreEnv\.score\(\) must return \(reward, info\)"),
        (CrashOnBraceEnv, r"step raised RecursionError"),
        (BadStepEnv, r"reward must be a float|num_parse_errors"),
        (BadSchemaEnv, r"tool #2 is not OpenAI format"),
        (NoTeacherEnv, r"teacher_messages\(\) returned the student's messages unchanged"),
    ],
)
def test_kit_fails_broken_envs(env_cls, pattern):
    with pytest.raises(AssertionError, match=pattern):
        check_env(env_cls(), num_fuzz=300)


def test_report_lists_problems_without_raising():
    report = check_env(CrashingScoreEnv(), num_fuzz=100, raise_on_error=False)
    assert isinstance(report, CheckReport) and not report.ok
    assert report.num_errors >= len(report.errors) > 0
    assert all(isinstance(e, str) for e in report.errors)
    assert "problem(s)" in str(report)


def test_error_message_names_seed_and_shows_a_bounded_list():
    with pytest.raises(AssertionError) as info:
        check_env(CrashingScoreEnv(), num_fuzz=300, seed=11)
    message = str(info.value)
    assert "seed=11" in message and "... and" in message
    assert len(message) < 10_000  # huge actions are shown shortened


def test_gymnasium_warnings_count_as_failures():
    class NoFps(LibraryEnv):
        metadata = {"render_modes": ["ansi"]}

    with pytest.raises(AssertionError, match="render fps"):
        check_env(NoFps(), num_fuzz=0)


def test_render_is_exercised_without_a_spec():
    class BadRender(LibraryEnv):
        def render(self):
            return 42 if self.render_mode == "ansi" else None

    with pytest.raises(AssertionError, match="render_mode 'ansi' must return a str"):
        check_env(BadRender(), num_fuzz=0)


# ---- discovery -----------------------------------------------------------------------------------

LOADERS = {
    "pbsd/BFCL-v0": lambda data: {"data_path": str(data("bfcl", "BFCL_v3_simple.json"))},
    "pbsd/GSM8K-v0": lambda data: {"data_path": str(data("gsm8k", "train.jsonl"))},
    "pbsd/TauRetail-v0": lambda data: {"data_dir": str(data("tau_bench", "retail"))},
    # a small file of the tests' own (no reference data needed)
    "pbsd/MATH-v0": lambda data: {"data_path": str(Path(__file__).parent / "data" / "math_small.jsonl"), "holdout_every": None},
}
PROCEDURAL = [i for i in registered_env_ids("pbsd") if i not in LOADERS]


def test_registered_ids():
    ids = registered_env_ids("pbsd")
    assert set(LOADERS) <= set(ids) and {"pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"} <= set(ids)
    assert all(i.startswith("pbsd/") for i in ids)
    assert example.ENV_ID in registered_env_ids("my")
    # by default the user's own envs are listed too, gymnasium's are not
    assert {example.ENV_ID, "pbsd/ToolCall-v0"} <= set(registered_env_ids()) and "CartPole-v1" not in registered_env_ids()


def test_buildable_ids_leave_out_loaders():
    buildable = buildable_env_ids("pbsd")
    assert not set(buildable) & set(LOADERS)
    assert set(buildable) <= set(PROCEDURAL)
    assert example.ENV_ID in buildable_env_ids()  # the README's pytest recipe reaches the user's env


@pytest.mark.parametrize("env_id", PROCEDURAL)
def test_kit_on_procedural_env(env_id):
    # No skip: an env that is registered but does not build without arguments is a bug.
    report = check_env(gym.make(env_id), num_fuzz=NUM_FUZZ)
    print(report)
    assert report.fuzz_steps == NUM_FUZZ


@pytest.mark.parametrize("env_id", sorted(LOADERS))
def test_kit_on_loader_env(env_id, shared_data):
    report = check_env(gym.make(env_id, **LOADERS[env_id](shared_data)), num_fuzz=NUM_FUZZ)
    print(report)
    assert report.fuzz_steps == NUM_FUZZ
