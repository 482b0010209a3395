"""scripts/investigate_pbsd.py: its section lands in the document once, and its measurements hold."""

import json
import subprocess
import sys
from pathlib import Path

from scripts import investigate_pbsd as investigate

ROOT = Path(__file__).resolve().parents[1]


def test_write_section_replaces_its_own_section_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text("# tables\n\nhand-written\n")
    investigate.write_section(doc, ["first"])
    investigate.write_section(doc, ["second"])
    text = doc.read_text()
    assert text.startswith("# tables\n\nhand-written\n")
    assert "second" in text and "first" not in text and text.count(investigate.BEGIN) == 1


def test_push_up_half_is_sft_and_the_document_gets_a_row(tmp_path):
    doc = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "investigate_pbsd.py"), "--envs", "pbsd/MathCalc-v0",
                           "--batches", "2", "--doc", str(doc)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pbsd/MathCalc-v0 |" in doc.read_text()
    m = json.loads((tmp_path / "investigate_pbsd.json").read_text())["pbsd/MathCalc-v0"]
    # deep in the linear regime the push-up half is SFT's direction; PBSD's whole update is not
    assert m["weight"] > 0.9 and m["cos_pos_sft"] > 0.99
    assert m["cos_pbsd_sft"] < 0.95 and m["norm_neg"] > 0.3 * m["norm_pos"]
