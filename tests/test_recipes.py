"""Training recipes and the method comparison: configs are valid; --quick runs (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pbsd_agents.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "scripts" / "recipes").glob("*.yaml"))


def test_there_is_a_recipe_per_benchmark_env():
    envs = {yaml.safe_load(p.read_text())["env"] for p in RECIPES}
    assert envs == {"pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0", "pbsd/BFCL-v0", "pbsd/GSM8K-v0",
                    "pbsd/TauRetail-v0"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_a_valid_train_config(path):
    TrainConfig.from_dict(yaml.safe_load(path.read_text())).validate()


# The data a recipe needs comes from the user (`--env-arg KEY=PATH`), never from the recipe itself.
RECIPE_DATA = {"bfcl": ("data_path", "bfcl", "BFCL_v3_simple.json"), "gsm8k": ("data_path", "gsm8k", "train.jsonl"),
               "tau_retail": ("data_dir", "tau_bench", "retail")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_envs_build_with_the_users_data(path, shared_data):
    from pbsd_agents.envs.registry import make_env

    config = TrainConfig.from_dict(yaml.safe_load(path.read_text()))
    if path.stem in RECIPE_DATA:
        key, *parts = RECIPE_DATA[path.stem]
        assert key not in config.env_kwargs and f"--env-arg {key}=" in path.read_text()
        config.env_kwargs[key] = str(shared_data(*parts))
    for kwargs in (config.env_kwargs, config.resolved_eval_env_kwargs()):
        make_env(config.env, **kwargs).close()


@pytest.mark.slow
def test_compare_methods_quick(tmp_path):
    from pbsd_agents.presets import resolve_model

    try:
        resolve_model("default")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "compare_methods.py"), "--quick", "--jobs", "2", "--device", "cpu",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for method in ("PBSD", "PBSD+", "OPSD", "GRPO", "RFT", "SeqKD"):
        assert f"| {method} |" in text
    assert (tmp_path / "compare_ToolCall-v0.png").exists()
    assert len(json.loads((tmp_path / "compare_results.json").read_text())) == 6
    # every method is evaluated at the same budgets, whatever it samples per step
    curves = [json.loads(f.read_text())["curve"] for f in (tmp_path / "runs" / "results").glob("*.json")]
    assert len(curves) == 6 and all([c["trajectories"] for c in cv] == [0, 16, 32] for cv in curves)
    # a second call finds every result saved and rewrites the tables, keeping what was written below them
    out.write_text(out.read_text() + "a hand-written analysis\n")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0 and "6 of 6 runs already done" in again.stdout
    text = out.read_text()
    assert text.count("| PBSD |") == 1 and text.endswith("a hand-written analysis\n")
