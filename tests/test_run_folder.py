"""A run folder survives every fault: checkpoints that cannot run code and are verified before use, one
writer at a time, exact logs on resume, finished runs left alone, conflicting resume flags refused,
typed config values, and envs checked before the model loads."""

import json
import shutil

import pytest
import torch
import yaml

from pbsd_agents import checkpoint
from pbsd_agents.cli import main as cli_main
from pbsd_agents.config import TrainConfig
from pbsd_agents.runlog import RunLog, read_jsonl
from pbsd_agents.trainer import Trainer


def config(tiny_model, out, **kw):
    base = dict(model=tiny_model, env="pbsd/MathCalc-v0", steps=4, tasks_per_step=2, eval_tasks=2, pass_k=1,
                max_new_tokens=8, max_tokens=16, save_every=2, keep_last=2, out=str(out), progress=False)
    return TrainConfig(**{**base, **kw})


def logged(out, name):
    return [r["step"] for r in read_jsonl(out / name)]


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    Trainer(config(tiny_model, out)).train()
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def test_a_second_writer_is_refused_with_the_holder_named(tiny_model, run):
    holder = RunLog(run)
    holder.open()
    try:
        with pytest.raises(FileExistsError, match=r"being written by another run \(pid \d+ on "):
            Trainer(config(tiny_model, run, resume=True, steps=6)).train()
    finally:
        holder.close()
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4]  # nothing was appended


def test_resuming_a_finished_run_does_nothing(tiny_model, run, capsys):
    before = (run / "eval.jsonl").read_text()
    summary = Trainer(config(tiny_model, run, resume=True, progress=True)).train()
    assert "is finished (step 4); nothing to do" in capsys.readouterr().err
    assert (run / "eval.jsonl").read_text() == before and summary["eval_after"]["step"] == 4


def test_resume_before_the_first_checkpoint_starts_over_with_clean_logs(tiny_model, run, capsys):
    shutil.rmtree(run / "checkpoints")  # killed at step 1: logs written, no checkpoint yet
    (run / "summary.json").unlink()
    Trainer(config(tiny_model, run, resume=True, progress=True)).train()
    assert "no checkpoint in" in capsys.readouterr().err
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4] and logged(run, "eval.jsonl") == [0, 4]


def test_resume_with_no_usable_checkpoint_is_an_error_not_a_restart(tiny_model, run):
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / checkpoint.MANIFEST).unlink()  # e.g. checkpoints of an older version: never silently discarded
    with pytest.raises(ValueError, match="no checkpoint in .* verifies and loads"):
        Trainer(config(tiny_model, run, resume=True, steps=6)).train()
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4]


def test_a_failed_start_leaves_a_folder_that_can_be_used_again(tiny_model, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ValueError, match="missing.jsonl"):
        Trainer(config(tiny_model, out, env="pbsd/GSM8K-v0", env_kwargs={"data_path": str(tmp_path / "missing.jsonl")})).train()
    assert [p.name for p in out.iterdir()] == [".lock"]
    Trainer(config(tiny_model, out, steps=1))  # a lock alone is not a run: a fresh start is accepted
    trainer = Trainer(config(tiny_model, tmp_path / "r2", steps=1, env_kwargs={"data_path": "x"}))
    with pytest.raises(ValueError, match="cannot make env"):  # an unknown argument for MathCalc: setup fails
        trainer.train()
    trainer.config.env_kwargs.clear()
    trainer.train()  # the same process retries: the lock was released


def test_resume_after_a_mid_run_checkpoint_drops_later_rows_and_keeps_a_cut_line_local(tiny_model, run):
    shutil.rmtree(run / "checkpoints" / "step_000004")  # killed after step 4 was logged, before its checkpoint
    (run / "summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[0] = lines[0][:20]  # a line cut mid-file: only that row is lost when read
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert logged(run, "metrics.jsonl") == [2, 3, 4]
    Trainer(config(tiny_model, run, resume=True)).train()
    assert logged(run, "metrics.jsonl") == [2, 3, 4] and logged(run, "eval.jsonl") == [0, 4]


def test_resume_refuses_conflicting_options_and_accepts_a_new_budget(tiny_model, run):
    with pytest.raises(ValueError, match=r"--resume: lr=0.5 \(the run has 0.0001\); seed=3 \(the run has 0\); only steps"):
        Trainer(config(tiny_model, run, resume=True, lr=0.5, seed=3))
    # an option given again with the same value, spelled differently, is no conflict
    Trainer(config(tiny_model, run, resume=True, steps=6, eval_every=3, algo_args={"beta": "0.1"})).train()
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4, 5, 6]


def test_resume_without_a_run_is_an_error(tiny_model, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="holds no run to resume"):
        Trainer(config(tiny_model, tmp_path / "nothing-here", resume=True))
    assert cli_main(["train", "--out", str(tmp_path / "nothing-here"), "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err


def test_the_env_and_its_data_are_checked_before_the_model_loads(tmp_path):
    cfg = TrainConfig(model=str(tmp_path / "no-such-model"), env="pbsd/GSM8K-v0",
                      env_kwargs={"data_path": str(tmp_path / "missing.jsonl")}, out=str(tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match="missing.jsonl"):  # the data, not the model, is named
        Trainer(cfg).train()


@pytest.mark.parametrize("values, message", [
    ({"lr": "1e-3x"}, "config lr must be a float, got '1e-3x'"),
    ({"steps": "ten"}, "config steps must be an int, got 'ten'"),
    ({"seed": 1.5}, "config seed must be an int, got 1.5"),
    ({"steps": 1.5}, "config steps must be an int, got 1.5"),
    ({"progress": "yes"}, "config progress must be a bool"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": 0}, "lr must be a finite number > 0"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"max_trajectories": -5}, "max_trajectories must be a finite number >= 0"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"env_kwargs": {"": 1}}, "env_kwargs keys must be argument names"),
    ({"algo_args": {"beta": "big"}}, "pbsd option beta must be a float, got 'big'"),
])
def test_bad_config_values_are_one_line_errors(values, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values).validate()


def test_a_config_built_in_python_gets_the_same_types():
    cfg = TrainConfig(lr="1e-3", save_every="3")
    cfg.validate()
    assert (cfg.lr, cfg.save_every) == (0.001, 3)


def test_numbers_are_coerced_by_the_fields_type(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string: the field's type decides
    loaded = yaml.safe_load("lr: 1e-3\nsave_every: '2'\nalgo_args: {beta: 1e-3, teacher_temperature: 0}\n")
    cfg = TrainConfig.from_dict(loaded)
    cfg.validate()
    assert (cfg.lr, cfg.save_every) == (0.001, 2)
    algo = cfg.algorithm_config()
    assert algo.beta == 0.001 and algo.teacher_temperature == 0.0


def test_cli_config_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("steps: ten\n")
    assert cli_main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pbsd-agents train: error: config steps must be an int, got 'ten'"]
    assert cli_main(["train", "--algo-arg", "beta=oops", "--out", str(tmp_path / "r")]) == 2
    assert "pbsd option beta must be a float, got 'oops'" in capsys.readouterr().err


def test_a_disk_without_room_for_a_checkpoint_fails_before_the_model_loads(tiny_model, tmp_path, monkeypatch):
    import shutil as shutil_module
    from collections import namedtuple

    loaded = []
    monkeypatch.setattr("pbsd_agents.loading.load_policy", lambda *a, **k: loaded.append(1))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match=r"0 MB free, a checkpoint needs about \d+ MB"):
        Trainer(config(tiny_model, tmp_path / "r")).train()
    assert not loaded


# ---- checkpoints -------------------------------------------------------------------------------


def reseal(ckpt):
    """Rewrite the manifest after a change, as an attacker who edits a checkpoint can."""
    manifest = json.loads((ckpt / checkpoint.MANIFEST).read_text())
    manifest["sha256"] = {name: checkpoint._sha256(ckpt / name) for name in manifest["sha256"]}
    (ckpt / checkpoint.MANIFEST).write_text(json.dumps(manifest))


class Payload:
    """Unpickling this calls ``open(marker, "w")``: code that runs at load time."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_finished_run_has_valid_checkpoints(run):
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_000002", "step_000004"]
    assert all(checkpoint.verify(c) is None for c in ckpts)
    assert checkpoint.latest(run / "checkpoints") == ckpts[-1]


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pt"])
def test_a_crafted_pickle_never_runs_and_the_previous_checkpoint_is_used(tiny_model, run, tmp_path, capsys, name):
    marker = tmp_path / "pwned"
    newest = run / "checkpoints" / "step_000004"
    torch.save(Payload(marker), newest / name)
    reseal(newest)  # the checksums cannot tell: the loader itself must refuse
    with pytest.raises(ValueError, match="cannot be loaded as plain tensors"):
        checkpoint._torch_load(newest / name)
    Trainer(config(tiny_model, run, resume=True, progress=True)).train()
    err = capsys.readouterr().err
    assert not marker.exists()
    assert f"skipping checkpoint step_000004: step_000004/{name} cannot be loaded" in err
    assert "resumed from" in err and "(step 2)" in err
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4]  # steps 3 and 4 trained again from step 2, logged once


def test_altered_or_inconsistent_checkpoints_are_skipped(run):
    ckpts = run / "checkpoints"
    newest = ckpts / "step_000004"
    with open(next(newest.glob("model*.safetensors")), "ab") as f:
        f.write(b"appended")
    skipped = []
    assert checkpoint.latest(ckpts, on_skip=skipped.append) == ckpts / "step_000002"
    assert "does not match its checksum" in skipped[0]

    state = json.loads((newest / checkpoint.STATE).read_text())
    (newest / checkpoint.STATE).write_text(json.dumps({**state, "step": 999}))
    reseal(newest)
    assert "says step 999" in checkpoint.verify(newest)
    (newest / checkpoint.STATE).write_text(json.dumps({**state, "tokens": "many"}))
    reseal(newest)
    assert "non-negative integers" in checkpoint.verify(newest)
    (newest / "model-extra.safetensors").write_bytes(b"unlisted")
    reseal(newest)  # resealing keeps the listed names: the extra file stays unlisted
    assert "does not list exactly the files" in checkpoint.verify(newest)
    (newest / checkpoint.MANIFEST).unlink()
    assert "no readable manifest.json" in checkpoint.verify(newest)


def test_a_stray_newer_folder_never_costs_a_valid_checkpoint(tiny_model, run):
    stray = run / "checkpoints" / "step_000099"
    stray.mkdir()
    (stray / checkpoint.STATE).write_text("{}")
    Trainer(config(tiny_model, run, resume=True, steps=6, keep_last=1)).train()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_000006", "step_000099"]  # older ones pruned, the stray left alone
    assert checkpoint.latest(run / "checkpoints") == run / "checkpoints" / "step_000006"
    assert logged(run, "metrics.jsonl") == [1, 2, 3, 4, 5, 6]


def test_a_failed_write_leaves_no_temp_folder_and_stale_ones_are_removed(tiny_model, run, monkeypatch):
    trainer = Trainer(config(tiny_model, run, resume=True))
    trainer.setup()
    ckpts = run / "checkpoints"
    (ckpts / ".tmp-step_000003-12345").mkdir()  # left by a killed write

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write checkpoint .*step_000000: No space left on device"):
        trainer.save_checkpoint()
    assert not list(ckpts.glob(".tmp-*"))
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000002", "step_000004"]
