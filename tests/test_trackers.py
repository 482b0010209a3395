"""``--report-to``: each installed tracker gets a 3-step run's rows under the names of metrics.jsonl /
eval.jsonl and the run's config, all offline; unknown or missing trackers are one-line errors before
the model loads; a tracker failing mid-run costs nothing but itself."""

import importlib.util
import json
import os
import struct
import subprocess
import sys

import pytest

from pbsd_agents import trackers
from pbsd_agents.cli import main as cli_main
from pbsd_agents.config import TrainConfig
from pbsd_agents.runlog import read_jsonl
from pbsd_agents.trackers import flatten, parse_report_to

INSTALLED = [name for name, (module, _) in trackers.TRACKERS.items() if importlib.util.find_spec(module)]


def test_unknown_tracker_is_a_one_line_error_naming_the_choices(capsys):
    with pytest.raises(ValueError, match=r"unknown report_to 'mlflow'; valid choices: none, tensorboard, wandb, trackio"):
        TrainConfig(report_to="tensorboard,mlflow").validate()
    assert cli_main(["train", "--report-to", "mlflow", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "valid choices: none, tensorboard, wandb, trackio" in err[0]


def test_a_missing_tracker_package_names_the_extra(monkeypatch):
    # a module name that is really absent, under the wandb entry: the path a machine without wandb takes
    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("wandb_is_not_installed_here", "wandb"))
    with pytest.raises(ValueError, match=r"pip install 'pbsd-agents\[wandb\]'$"):
        TrainConfig(report_to="wandb").validate()


def test_report_to_parsing():
    assert parse_report_to("none") == parse_report_to("") == []
    if {"tensorboard", "wandb"} <= set(INSTALLED):
        assert parse_report_to(" TensorBoard, wandb,wandb ") == ["tensorboard", "wandb"]


def test_rows_are_flattened_under_their_file_names():
    row = {"step": 3, "success": 0.5, "success_ci": [0.2, 0.8], "k": 4, "pass_at_k": None, "env": "x",
           "per_category": {"simple": {"success": 1.0, "success_ci": [0.5, 1.0]}}}
    assert flatten(row, "eval/") == {"eval/success": 0.5, "eval/success_ci/low": 0.2, "eval/success_ci/high": 0.8,
                                     "eval/k": 4, "eval/per_category/simple/success": 1.0,
                                     "eval/per_category/simple/success_ci/low": 0.5,
                                     "eval/per_category/simple/success_ci/high": 1.0}


def expected(run):
    """{step: {name: value}} as a tracker should hold the run's metrics and eval rows."""
    out = {}
    for name, prefix in (("metrics.jsonl", ""), ("eval.jsonl", "eval/")):
        for row in read_jsonl(run / name):
            out.setdefault(row["step"], {}).update(flatten(row, prefix))
    return out


def read_wandb(path):
    """The history rows of an offline ``.wandb`` file: a 7-byte W&B header, then LevelDB-log records
    (32 KiB blocks; chunk header crc32, length, type) of ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data, block, rows, config = path.read_bytes(), 32768, [], {}
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.HasField("history"):
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            for updates in ([record.config.update] if record.HasField("config") else []) + \
                    ([record.run.config.update] if record.HasField("run") else []):  # init's config rides on the run record
                config.update({i.key: json.loads(i.value_json) for i in updates})
    return rows, config


@pytest.mark.skipif(not INSTALLED, reason="no tracker installed (pip install 'pbsd-agents[tensorboard,wandb,trackio]')")
def test_a_three_step_run_reaches_every_installed_tracker(tiny_model, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"),
           "TRACKIO_DIR": str(tmp_path / "trackio"), "WANDB_SILENT": "true"}
    (tmp_path / "wandb").mkdir()
    args = [sys.executable, "-m", "pbsd_agents.cli", "train", "--model", tiny_model, "--env", "pbsd/MathCalc-v0",
            "--steps", "3", "--tasks-per-step", "2", "--eval-tasks", "2", "--pass-k", "2", "--max-new-tokens", "8",
            "--max-tokens", "16", "--save-every", "3", "--eval-every", "2", "--out", str(run), "--no-progress",
            "--lr", "0.003", "--report-to", ",".join(INSTALLED)]
    # a subprocess: trackio reads TRACKIO_DIR when imported, so this keeps its store in tmp_path
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr.lower().replace("warnings", "")
    want = expected(run)
    assert sorted(want) == [0, 1, 2, 3] and "eval/success_ci/low" in want[3] and "loss" in want[1]

    got = {}  # tracker -> {step: {name: value}}
    if "tensorboard" in INSTALLED:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        got["tensorboard"] = {}
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                got["tensorboard"].setdefault(e.step, {})[tag] = e.value
        config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
        assert '"lr": 0.003' in config_text
    if "wandb" in INSTALLED:
        [path] = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")
        rows, config = read_wandb(path)
        got["wandb"] = {}
        for row in rows:
            got["wandb"].setdefault(row.pop("_step"), {}).update(
                {k: v for k, v in row.items() if not k.startswith("_")})
        assert config["lr"] == {"value": 0.003} or config["lr"] == 0.003
    if "trackio" in INSTALLED:
        read = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
                "print(json.dumps({'logs': S.get_logs('pbsd-agents', 'run'), 'config': S.get_run_config('pbsd-agents', 'run')}, default=str))")
        out = json.loads(subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True,
                                        check=True, timeout=120).stdout)
        got["trackio"] = {}
        for row in out["logs"]:
            got["trackio"].setdefault(row.pop("step"), {}).update({k: v for k, v in row.items() if k != "timestamp"})
        assert out["config"]["lr"] == 0.003 and out["config"]["algo"] == "pbsd"
    assert set(got) == set(INSTALLED)
    for name, by_step in got.items():
        assert sorted(by_step) == sorted(want), name
        for step, values in want.items():
            assert set(by_step[step]) == set(values), (name, step)
            assert by_step[step] == pytest.approx(values, rel=1e-6), (name, step)  # TensorBoard keeps float32


@pytest.mark.skipif("wandb" not in INSTALLED, reason="needs wandb (pip install 'pbsd-agents[wandb]')")
def test_a_tracker_failing_mid_run_is_warned_once_and_the_rows_are_kept(tmp_path, monkeypatch, capsys):
    from pbsd_agents.runlog import RunLog

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = RunLog(tmp_path / "run", report_to="wandb", config={"lr": 0.1})
    log.open()
    log._trackers.trackers[0].run.finish()  # the real run refuses rows from now on, as after a crash of its service
    for step in (1, 2, 3):
        log.metrics({"step": step, "loss": 1.0 / step})
    log.eval({"step": 3, "success": 0.5})
    log.close()
    import wandb

    wandb.teardown()  # the process's wandb settings (offline) go with it
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: wandb failed to log step 1")


@pytest.mark.skipif("wandb" not in INSTALLED, reason="needs wandb (pip install 'pbsd-agents[wandb]')")
def test_a_tracker_that_cannot_start_is_one_line_before_the_model_loads(tiny_model, tmp_path):
    # online W&B with no key anywhere: a home of its own, so no login of the machine's is used; a fresh
    # process, since wandb keeps the settings of the first run a process started (offline, above)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    args = [sys.executable, "-m", "pbsd_agents.cli", "train", "--model", tiny_model, "--report-to", "wandb",
            "--out", str(tmp_path / "run"), "--no-progress", "--steps", "1", "--eval-tasks", "1"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    err = [line for line in done.stderr.splitlines() if line.startswith("pbsd-agents")]
    assert done.returncode == 2 and len(err) == 1, done.stderr[-2000:]
    assert "--report-to wandb: could not start" in err[0] and "WANDB_MODE=offline" in err[0], err
    assert "held-out" not in done.stdout + done.stderr  # nothing ran
