"""scripts/bench_throughput.py and scripts/bench_envs.py: --help is cheap; the oracle timing; --quick runs every section (slow)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench.envs import loader_kwargs, time_oracle

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_throughput.py"


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_help_lists_the_options():
    proc = _run(SCRIPT, "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--out", "--sections", "--data-dir"):
        assert option in proc.stdout


def test_the_tokenizer_folder_is_asked_for(tmp_path):
    proc = _run(SCRIPT, "--quick", "--sections", "3", "--out", tmp_path / "B.md", timeout=60)
    assert proc.returncode == 2 and "pass --tokenizer FOLDER or --data-dir DATA" in proc.stderr


def test_time_oracle_plays_seeded_oracle_episodes():
    from pbsd_agents.envs.registry import make_env

    r = time_oracle(make_env("pbsd/MathCalc-v0"), lambda i: {"seed": i}, episodes=3)
    assert r["episodes"] == r["successes"] == 3 and r["steps"] >= 3
    assert 0 < r["step_s"] < r["total_s"] and 0 < r["reset_s"] < r["total_s"]
    assert loader_kwargs("pbsd/BFCL-v0", None) == ({}, "no --data-dir given")
    assert loader_kwargs("pbsd/MathCalc-v0", None) == ({}, None)


def test_bench_envs_prints_a_row_per_env_and_skips_loaders_without_data():
    proc = _run(ROOT / "scripts" / "bench_envs.py", "--episodes", "2", "--env", "pbsd/ToolCall-v0", "--env", "pbsd/GSM8K-v0")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| pbsd/ToolCall-v0 |"))
    assert row.startswith("| pbsd/ToolCall-v0 | 2 | 2 |") and "| 1.00 |" in row
    assert "skipped pbsd/GSM8K-v0: no --data-dir given" in proc.stdout


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path, shared_data):
    data = shared_data("tokenizers", "qwen2.5-instruct").parents[1]
    out = tmp_path / "BENCH.md"
    proc = _run(SCRIPT, "--quick", "--data-dir", data, "--out", out, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text(encoding="utf-8")
    assert "--quick" in text and "torch threads" in text
    for heading in ("## 1. PBSD update vs TRL", "## 2. Peak memory", "## 3. Environment steps/s", "## 4. Framework overhead"):
        assert heading in text
    if importlib.util.find_spec("trl") is not None:
        ratio = re.search(r"TRL / kit step time: ([0-9.]+)×", text)
        assert ratio and float(ratio.group(1)) > 0
    assert re.search(r"Full / LoRA: [0-9.]+× peak RSS", text)
    assert re.search(r"Overhead ratio \(kit / bare, whole iteration\): [0-9.]+×", text)
    # every procedural env ran with the oracle and succeeded
    for env_id in ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{env_id}`"))
        assert row.rstrip(" |").endswith("1.000"), row
