"""pbsd/TauRetail-v0 reads tau-bench's own layout (a clone of its repository) and the flat one alike.

The tau-bench-layout fixture is written in a temporary folder from the flat reference data: the
database under ``tau_bench/envs/retail/data``, ``wiki.md``, ``tasks_<split>.py`` with literal
``Task(...)`` / ``Action(...)`` calls, and ``tools/*.py`` whose ``get_info`` returns the schema.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import pytest

import pbsd_agents.envs  # noqa: F401  (registers the pbsd/ ids)
from pbsd_agents.envs.tau_data import locate, read_python_tasks
from pbsd_agents.envs.tau_retail_db import TOOL_SPECS
from pbsd_agents.testing import check_env

PROBE = "tau-layout-probe-was-executed"
# Extra test-split tasks: a hand-off at the end, and outputs to say.
TEST_TASKS = [
    {"annotator": "0", "user_id": "u", "instruction": "Please hand me to a human.",
     "actions": [{"name": "transfer_to_human_agents", "kwargs": {"summary": "wants a human"}}], "outputs": []},
    {"annotator": "0", "user_id": "u", "instruction": "How much is 2 ** 10?",
     "actions": [{"name": "calculate", "kwargs": {"expression": "2 ** 10"}}], "outputs": ["1024"]},
]


def task_source(name: str, tasks: list[dict], probe_dir: Path) -> str:
    # A line that would leave a file behind if the module were ever executed.
    lines = ["from tau_bench.types import Task, Action", f"open({str(probe_dir / PROBE)!r}, 'w').close()", "",
             f"{name} = ["]
    for t in tasks:
        actions = ", ".join(f"Action(name={a['name']!r}, kwargs={a['kwargs']!r})" for a in t["actions"])
        lines.append(f"    Task(annotator={t['annotator']!r}, user_id={t['user_id']!r}, instruction={t['instruction']!r}, "
                     f"actions=[{actions}], outputs={t['outputs']!r}),")
    return "\n".join(lines + ["]", ""])


def tool_source(schema: dict) -> str:
    return ("from typing import Any, Dict\nfrom tau_bench.envs.tool import Tool\n\n\nclass T(Tool):\n"
            "    @staticmethod\n    def invoke(data, **kwargs):\n        raise SystemExit('never run')\n\n"
            f"    @staticmethod\n    def get_info() -> Dict[str, Any]:\n        return {schema!r}\n")


@pytest.fixture(scope="module")
def flat_dir(shared_data) -> Path:
    return shared_data("tau_bench", "retail", "tasks_train.json").parent


@pytest.fixture(scope="module")
def clone_dir(flat_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tau-bench")
    retail = root / "tau_bench" / "envs" / "retail"
    (retail / "data").mkdir(parents=True)
    (retail / "tools").mkdir()
    for name in ("orders", "products", "users"):
        shutil.copy(flat_dir / f"{name}.json", retail / "data" / f"{name}.json")
    shutil.copy(flat_dir / "policy_wiki.md", retail / "wiki.md")
    for split in ("train", "dev"):
        tasks = json.loads((flat_dir / f"tasks_{split}.json").read_text())
        (retail / f"tasks_{split}.py").write_text(task_source(f"TASKS_{split.upper()}", tasks, root))
    (retail / "tasks_test.py").write_text(task_source("TASKS_TEST", TEST_TASKS, root))
    for schema in json.loads((flat_dir / "tools_schema.json").read_text()):
        (retail / "tools" / f"{schema['function']['name']}.py").write_text(tool_source(schema))
    (retail / "tools" / "__init__.py").write_text("raise SystemExit('never run')\n")
    return root


def make(data_dir, split="train", **kwargs):
    return gym.make("pbsd/TauRetail-v0", data_dir=str(data_dir), split=split, **kwargs).unwrapped


@pytest.mark.parametrize("split", ["train", "dev"])
def test_both_layouts_give_identical_tasks(split, flat_dir, clone_dir):
    flat, clone = make(flat_dir, split), make(clone_dir, split)
    assert (flat.layout, clone.layout) == ("flat", "tau-bench")
    assert flat.tasks == clone.tasks and len(clone.tasks) == {"train": 500, "dev": 20}[split]
    assert flat.system_prompt == clone.system_prompt
    assert [t.to_openai() for t in flat.tools] == [t.to_openai() for t in clone.tools]
    for i in range(0, clone.num_tasks, 7):
        assert flat.reset(options={"index": i}) == clone.reset(options={"index": i})
        assert flat.oracle_actions() == clone.oracle_actions()
    assert not (clone_dir / PROBE).exists()  # read with ast: nothing in the files ran


def test_clone_folder_or_its_retail_folder(clone_dir):
    a, b = make(clone_dir, "dev"), make(clone_dir / "tau_bench" / "envs" / "retail", "dev")
    assert a.tasks == b.tasks and a.layout == b.layout == "tau-bench"


def test_test_split_handoff_and_outputs(clone_dir):
    env = make(clone_dir, "test")
    assert env.num_tasks == 2
    env.reset(options={"index": 0})
    assert len(env.oracle_actions()) == 1  # the hand-off ends the episode: no reply after it
    obs, reward, terminated, truncated, info = env.step(env.oracle_actions()[0])
    assert terminated and reward == 1.0 and obs == []
    env.reset(options={"index": 1})
    for turn in env.oracle_actions():
        obs, reward, terminated, truncated, info = env.step(turn)
    assert reward == 1.0 and "1024" in env.oracle_actions()[-1]


def test_check_env_on_the_clone_layout(clone_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_env(gym.make("pbsd/TauRetail-v0", data_dir=str(clone_dir), split="dev"), num_fuzz=200)
    assert report.ok


def test_without_tool_schemas_on_disk_the_kits_own_are_used(clone_dir, tmp_path):
    retail = tmp_path / "tau_bench" / "envs" / "retail"
    shutil.copytree(clone_dir / "tau_bench" / "envs" / "retail", retail, ignore=shutil.ignore_patterns("tools"))
    env = make(tmp_path, "dev")
    assert [(t.name, t.description, t.parameters) for t in env.tools] == TOOL_SPECS
    env.reset(options={"index": 3})
    for turn in env.oracle_actions():
        obs, reward, *_ = env.step(turn)
    assert reward == 1.0


def test_bad_task_files_give_one_line_errors(tmp_path):
    path = tmp_path / "tasks_train.py"
    for source, message in (
        ("TASKS = [Task(user_id='u', instruction=make(), actions=[], outputs=[])]", r":1: Task\(instruction=...\) is not a literal"),
        ("TASKS = [Task(user_id='u', instruction='i', actions=[run()], outputs=[])]", r"must be a list of Action"),
        ("TASKS = [Task('u')]", "keyword arguments only"),
        ("X = 1", "expected one list of Task"),
        ("TASKS = [", "not valid Python"),
    ):
        path.write_text(source)
        with pytest.raises(ValueError, match=message) as err:
            read_python_tasks(str(path))
        assert "\n" not in str(err.value)


def test_locate_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        locate(tmp_path / "nope")
    (tmp_path / "tau_bench" / "envs" / "retail" / "data").mkdir(parents=True)
    (tmp_path / "tau_bench" / "envs" / "retail" / "wiki.md").write_text("policy")
    with pytest.raises(ValueError, match=r"lacks \[.*orders\.json.*\(tau-bench layout\)"):
        locate(tmp_path)
