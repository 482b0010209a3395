"""Checkpoints: loading one never runs code, a damaged newest one is skipped for the intact previous one,
and a failed write leaves nothing behind."""

import json
import shutil

import pytest
import torch

from pbsd_agents import checkpoint
from pbsd_agents.trainer import TrainConfig, Trainer


def config(tiny_model, out, **kw):
    base = dict(model=tiny_model, env="pbsd/MathCalc-v0", steps=4, tasks_per_step=2, eval_tasks=2, pass_k=1,
                max_new_tokens=8, max_tokens=16, save_every=2, keep_last=2, out=str(out), progress=False)
    return TrainConfig(**{**base, **kw})


def steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    Trainer(config(tiny_model, out)).train()
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


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
    assert steps(run) == [1, 2, 3, 4]  # steps 3 and 4 trained again from step 2, logged once


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
    assert steps(run) == [1, 2, 3, 4, 5, 6]


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
