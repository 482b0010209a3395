"""scripts/bench_throughput.py: --help is cheap; --quick runs every section and writes a report (slow)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_throughput.py"
DATA = ROOT.parent / "shared" / "data"
TOKENIZER = DATA / "tokenizers" / "qwen2.5-instruct"


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--out", "--sections", "--data-dir"):
        assert option in proc.stdout


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path):
    if not TOKENIZER.is_dir():
        pytest.skip(f"the Qwen2.5 tokenizer is not at {TOKENIZER} (shared data folder absent)")
    out = tmp_path / "BENCH.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
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
