"""`pbsd-agents rollout` and `pbsd-agents envs`: the issue's done-when run, and one-line errors."""

import json

import pytest

from pbsd_agents.cli import main
from pbsd_agents.invariants import check_jsonl
from scripts.make_tiny_model import make_tiny_model
from tests.support import qwen_dir


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), qwen_dir(), hidden=32, layers=1, mean_turn=8)


def test_rollout_toolcall_writes_a_checked_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    rc = main(["rollout", "--env", "pbsd/ToolCall-v0", "--model", str(tiny_model_dir), "--n", "16", "--out", str(out),
               "--max-new-tokens", "24", "--check", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "wrote 16 student trajectories" in text and "0 violation(s)" in text
    lines = out.read_text().splitlines()
    assert len(lines) == 16
    first = json.loads(lines[0])
    assert list(first)[0] == "version" and first["version"] == 1 and first["env_id"] == "pbsd/ToolCall-v0"
    report = check_jsonl(out, _tokenizer(tiny_model_dir))
    assert report.ok and report.render_checked == 16, report.summary()


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def test_rollout_teacher_view_with_repeats(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    rc = main(["rollout", "--env", "pbsd/MathCalc-v0", "--model", str(tiny_model_dir), "--n", "4", "--repeat", "2",
               "--view", "teacher", "--split", "test", "--out", str(out), "--max-new-tokens", "8", "--no-progress"])
    assert rc == 0, capsys.readouterr()
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in recs] == ["mathcalc-test-0"] * 2 + ["mathcalc-test-1"] * 2
    assert all(r["source"] == "teacher" for r in recs)


def test_envs_lists_the_registered_envs(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "pbsd/ToolCall-v0" in out and "pbsd/MathCalc-v0" in out


@pytest.mark.parametrize("argv, message", [
    (["--env", "pbsd/Nope-v0"], "unknown env 'pbsd/Nope-v0'; registered envs: pbsd/"),
    (["--env", "pbsd/MathCalc-v0", "--env-kwargs", "{oops"], "--env-kwargs is not valid JSON"),
    (["--env", "pbsd/MathCalc-v0", "--env-kwargs", '{"split": "nope"}'], "cannot make env"),
    (["--env", "pbsd/MathCalc-v0", "--n", "0"], "--n must be >= 1"),
    (["--env", "pbsd/MathCalc-v0", "--n", "3", "--repeat", "2"], "multiple of --repeat"),
    (["--env", "pbsd/MathCalc-v0", "--split", "test", "--start", "199"], "too many"),
])
def test_rollout_user_errors_are_one_line(argv, message, capsys, tmp_path):
    rc = main(["rollout", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o.jsonl")] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_missing_model_folder_is_one_line(capsys, tmp_path):
    rc = main(["rollout", "--env", "pbsd/MathCalc-v0", "--model", str(tmp_path / "missing" / "model"),
               "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "could not load model" in err[-1] and err[-1].startswith("pbsd-agents rollout: error:")


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "rollout" in out and "envs" in out
    with pytest.raises(SystemExit):
        main(["rollout", "--help"])
    assert "--view {student,teacher}" in capsys.readouterr().out
    assert main([]) == 2
