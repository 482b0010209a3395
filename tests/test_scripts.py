"""The runnable scripts: each one's --help, paths they need asked for (none points outside the repository), template_drift."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["bench_envs", "bench_parsers", "bench_rollout", "bench_step", "build_default_model", "compare_methods", "investigate_pbsd",
           "make_tiny_model", "probe_faults", "sweep_default", "template_drift", "trl_grpo",
           "bench_distributed"]


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    proc = _run(ROOT / "scripts" / f"{name}.py", "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["make_tiny_model.py", "OUT", "--tokenizer", "/nonexistent/tok"], "tokenizer folder /nonexistent/tok not found"),
    (["template_drift.py"], "the following arguments are required: --tokenizer"),
    (["sweep_default.py", "--algo-arg", "beta"], "--algo-arg expects KEY=VALUE"),
])
def test_missing_paths_and_bad_flags_are_one_line_errors(argv, message):
    proc = _run(ROOT / "scripts" / argv[0], *argv[1:])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_template_drift_replays_the_oracle_and_finds_no_drift_with_qwen(shared_data):
    from scripts import template_drift

    convs = template_drift.oracle_conversations("pbsd/Retail-v0", 3)
    assert len(convs) == 3 and all(c.student_messages[-1]["role"] == "assistant" for c in convs)
    proc = _run(ROOT / "scripts" / "template_drift.py", "--tokenizer", shared_data("tokenizers", "qwen2.5-instruct"),
                "--n", "4", "--env", "pbsd/ToolCall-v0", "pbsd/MathCalc-v0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("8/8 conversations render turn by turn exactly as in one go") == 2, proc.stdout


def test_bench_rollout_replaces_only_its_own_section(tmp_path):
    from scripts.bench_rollout import END, START, write

    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\n## 1. other section\n", encoding="utf-8")
    write(out, f"{START}\nfirst\n{END}\n")
    write(out, f"{START}\nsecond\n{END}\n")
    text = out.read_text(encoding="utf-8")
    assert "## 1. other section" in text and "second" in text and "first" not in text and text.count(START) == 1


@pytest.mark.slow
def test_bench_rollout_quick_writes_every_table(tmp_path, shared_data):
    out = tmp_path / "B.md"
    proc = subprocess.run([sys.executable, ROOT / "scripts" / "bench_rollout.py", "--quick", "--out", out,
                           "--tokenizer", shared_data("tokenizers", "qwen2.5-instruct")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text(encoding="utf-8")
    for heading in ("### Generation", "### Main job", "in the engine (s)", "Previous defaults", "Engine alone at 1 thread",
                    "### Scoring views that share a prompt", "tokens run, apart / packed",
                    "embedded default model",
                    "vocab 151,665"):
        assert heading in text
