"""Training on two CPU processes (torchrun, gloo): DDP and FSDP match one process, metrics are
reduced, and a rank killed with -9 ends the job and leaves a run that ``--resume`` finishes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pbsd_agents.cli import main as cli_main
from pbsd_agents.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch without the gloo backend")

# SFT on the teacher's greedy decodes: every rank's batch is deterministic, so one process with 8
# tasks per step and two with 4 each see the same trajectories, and the gradients must agree.
COMMON = dict(env="pbsd/MathCalc-v0", steps=3, eval_tasks=2, pass_k=1, max_new_tokens=8, max_tokens=16,
              save_every=3, keep_last=1, progress=False, threads=1, algo="sft",
              algo_args={"only_successful": False}, lr=1e-2)


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def torchrun(args: list[str], **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pbsd_agents.cli", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)


def flags(config: dict) -> list[str]:
    out = []
    for k, v in config.items():
        if k == "algo_args":
            out += [a for key, val in v.items() for a in ("--algo-arg", f"{key}={str(val).lower()}")]
        elif isinstance(v, bool):
            out.append(f"--{'' if v else 'no-'}{k.replace('_', '-')}")
        else:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


@pytest.mark.parametrize("mode,lora", [("ddp", 0), ("fsdp", 0), ("fsdp", 2)])
def test_two_ranks_match_one_process(tiny_model, tmp_path, mode, lora):
    one = tmp_path / "one"
    Trainer(TrainConfig(model=tiny_model, out=str(one), tasks_per_step=8, lora_r=lora, **COMMON)).train()
    two = tmp_path / "two"
    proc = torchrun(flags({"model": tiny_model, "out": str(two), "tasks_per_step": 4, "parallel": mode,
                           "lora_r": lora, **COMMON, "progress": True}))
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    a, b = read(one / "metrics.jsonl"), read(two / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3]  # rank 0 alone writes the logs
    assert [m["trajectories"] for m in a] == [m["trajectories"] for m in b] == [8, 16, 24]
    assert [m["num_used"] for m in b] == [8, 8, 8]  # counts are summed over the ranks
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    assert a[-1]["loss"] < a[0]["loss"] - 1e-3  # the steps moved the weights: the comparison is not vacuous
    name = "adapter_model.safetensors" if lora else "model.safetensors"
    wa, wb = (load_file(str(run / "checkpoints" / "step_000003" / name)) for run in (one, two))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5  # float32, 3 AdamW steps at lr 1e-2
    assert read(two / "eval.jsonl")[-1]["num_tasks"] == 2  # the eval tasks were split and gathered
    assert f"2 processes, {mode}" in log
    if mode == "fsdp" and not lora:  # the full-state checkpoint resumes in one process
        Trainer(TrainConfig(model=tiny_model, out=str(two), tasks_per_step=4, resume=True, **{**COMMON, "steps": 4})).train()
        assert [m["step"] for m in read(two / "metrics.jsonl")] == [1, 2, 3, 4]
    if lora:  # and exports to a plain transformers folder
        from transformers import AutoModelForCausalLM

        assert cli_main(["export", str(two / "checkpoints" / "step_000003"), "--out", str(tmp_path / "merged"), "--merge"]) == 0
        assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").num_parameters() > 0


def test_accelerate_launch_with_an_fsdp_config(tiny_model, tmp_path):
    pytest.importorskip("accelerate", reason="needs accelerate (pip install accelerate)")
    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\nnum_processes: 2\nnum_machines: 1\nmachine_rank: 0\nuse_cpu: true\n"
                      "main_process_ip: 127.0.0.1\nmain_process_port: 0\nmixed_precision: 'no'\nfsdp_config:\n  fsdp_version: 2\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "pbsd_agents.cli",
           "train", *flags({"model": tiny_model, "out": str(out), **COMMON, "steps": 2, "tasks_per_step": 2, "progress": True})]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "2 processes, fsdp" in done.stdout + done.stderr  # --parallel auto follows the accelerate config
    assert [m["trajectories"] for m in read(out / "metrics.jsonl")] == [4, 8]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc: no procps needed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_kill_9_of_one_rank_ends_the_job_and_resume_finishes_it(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = flags({"model": tiny_model, "out": str(out), "env": "pbsd/MathCalc-v0", "steps": 6, "tasks_per_step": 2,
                  "eval_tasks": 2, "pass_k": 1, "max_new_tokens": 8, "max_tokens": 16, "save_every": 2,
                  "keep_last": 2, "eval_every": 3, "progress": False, "threads": 1})
    proc = torchrun(args)
    deadline = time.time() + 240
    while time.time() < deadline:
        if (out / "checkpoints").exists() and any((out / "checkpoints").glob("step_*")) \
                and (out / "metrics.jsonl").exists() and len(read(out / "metrics.jsonl")) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before a rank could be killed: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    ranks = _children(proc.pid)
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    killed_at = time.time()
    log, _ = proc.communicate(timeout=120)  # the launcher stops the other rank and fails
    assert proc.returncode != 0 and time.time() - killed_at < 120
    assert len(read(out / "metrics.jsonl")) < 6, "the kill came too late to test anything"

    resumed = torchrun(args + ["--resume"])
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-3000:]
    metrics = read(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # each step exactly once
    assert [m["num_pairs"] for m in metrics] == [4] * 6  # PBSD pairs of both ranks (2 tasks each), summed
    assert [e["step"] for e in read(out / "eval.jsonl")] == [0, 3, 6]
    assert (out / "checkpoints" / "step_000006").exists()
    assert not list((out / "checkpoints").glob(".tmp-*"))
