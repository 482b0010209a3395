"""The trainer end to end on a tiny model built from a config: every algorithm, the run folder, kill -9 + resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbsd_agents.cli import main as cli_main
from pbsd_agents.trainer import TrainConfig, Trainer


def small(tiny_model, out, **kw):
    base = dict(model=tiny_model, env="pbsd/MathCalc-v0", steps=3, tasks_per_step=2, eval_tasks=2, pass_k=2,
                max_new_tokens=8, max_tokens=16, save_every=2, keep_last=1, out=str(out), progress=False)
    return TrainConfig(**{**base, **kw})


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("algo,args", [
    ("pbsd", {}),
    ("pbsd", {"pair_filter": "verifier", "nll_coef": 0.5, "teacher_temperature": 0.0, "teacher_refresh": 2}),
    ("opsd", {"beta": 0.5, "top_k": 4}),
    ("grpo", {"group_size": 2}),
    ("sft", {"only_successful": False}),
])
def test_three_step_run_writes_the_run_folder(tiny_model, tmp_path, algo, args):
    out = tmp_path / "run"
    summary = Trainer(small(tiny_model, out, algo=algo, algo_args=args)).train()
    metrics = read(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for key in ("trajectories", "tokens", "loss", "wall_s", "lr", "threads"):
        assert key in metrics[-1]
    assert metrics[-1]["trajectories"] > metrics[0]["trajectories"]
    evals = read(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 3]
    for key in ("success", "success_t1", "pass_at_k", "mean_action_tokens", "parse_error_rate"):
        assert key in evals[-1]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_000003"]  # keep_last=1
    assert (out / "checkpoints" / "step_000003" / "optimizer.pt").exists()
    assert (out / "curves.png").stat().st_size > 1000
    assert (out / "config.yaml").exists() and summary["eval_after"]["step"] == 3
    if algo == "pbsd" and not args:  # (the verifier filter may drop every pair of an untrained model)
        assert {"h_pos", "h_neg", "margin", "pair_accuracy", "logp_pos", "logp_neg", "num_pairs"} <= set(metrics[0])


def test_existing_run_folder_is_refused_without_resume(tiny_model, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(small(tiny_model, out))


def test_cli_errors_are_one_line(capsys):
    assert cli_main(["train", "--env", "pbsd/Nope-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pbsd/ToolCall-v0" in err
    assert cli_main(["train", "--algo-arg", "gamma=1"]) == 2
    assert "valid:" in capsys.readouterr().err


def test_kill_9_then_resume_continues_the_same_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "pbsd_agents.cli", "train", "--model", tiny_model, "--env", "pbsd/MathCalc-v0",
            "--steps", "6", "--tasks-per-step", "2", "--eval-tasks", "2", "--pass-k", "1", "--max-new-tokens", "8",
            "--max-tokens", "16", "--save-every", "2", "--keep-last", "2", "--eval-every", "3", "--out", str(out),
            "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline:
        ckpts = list((out / "checkpoints").glob("step_*")) if (out / "checkpoints").exists() else []
        if ckpts and (out / "metrics.jsonl").exists() and len(read(out / "metrics.jsonl")) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(read(out / "metrics.jsonl"))
    assert done_before < 6
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = read(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    traj = [m["trajectories"] for m in metrics]
    assert traj == sorted(traj) and len(set(traj)) == 6
    assert [e["step"] for e in read(out / "eval.jsonl")] == [0, 3, 6]
    assert (out / "checkpoints" / "step_000006").exists()

    # The resumed run matches an uninterrupted one step for step (tasks and sampling derive from seed and step).
    ref = tmp_path / "ref"
    ref_args = [a if a != str(out) else str(ref) for a in args]
    subprocess.run(ref_args, capture_output=True, text=True, timeout=300, check=True)
    ref_metrics = read(ref / "metrics.jsonl")
    assert [m["trajectories"] for m in ref_metrics] == traj
    for a, b in zip(ref_metrics, metrics):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)


def test_lora_run_then_eval_and_merged_export(tiny_model, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    Trainer(small(tiny_model, out, steps=1, lora_r=2, algo_args={"teacher_refresh": 1})).train()
    ckpt = out / "checkpoints" / "step_000001"
    assert (ckpt / "adapter_config.json").exists()
    merged = tmp_path / "merged"
    assert cli_main(["export", str(ckpt), "--out", str(merged), "--merge"]) == 0
    model = AutoModelForCausalLM.from_pretrained(merged)  # plain transformers, no peft
    assert not hasattr(model, "peft_config")
    capsys.readouterr()
    assert cli_main(["eval", "--model", str(ckpt), "--env", "pbsd/MathCalc-v0", "--n", "2", "--max-new-tokens", "8",
                     "--max-tokens", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_tasks"] == 2 and 0.0 <= result["success"] <= 1.0 and result["step"] == 1


def test_eval_of_a_final_checkpoint_repeats_the_trainers_last_evaluation(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(small(tiny_model, out, steps=1, max_new_tokens=4, env_kwargs={"max_turns": 2})).train()
    last = read(out / "eval.jsonl")[-1]
    capsys.readouterr()
    # env, its arguments, task count, pass@k, token limits and seed come from the run's config.yaml
    assert cli_main(["eval", "--model", str(out / "checkpoints" / "step_000001"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out) == last


@pytest.mark.parametrize("args,collections", [({}, [["teacher", "student"]]),
                                              ({"teacher_temperature": 0.0}, [["teacher"], ["student"]])])
def test_a_step_collects_views_sampled_alike_together(tiny_model, tmp_path, args, collections):
    trainer = Trainer(small(tiny_model, tmp_path / "run", algo_args=args))
    trainer.setup()
    seen = []
    collect = trainer.collector.collect

    def spy(env, tasks, **kw):
        seen.append(sorted(set([kw["view"]] if isinstance(kw["view"], str) else kw["view"]), reverse=True))
        return collect(env, tasks, **kw)

    trainer.collector.collect = spy
    batch = trainer.collect_batch(1)
    assert seen == collections
    assert all(t.source == "teacher" for g in batch.groups for t in g.teacher)
    assert all(t.source == "student" for g in batch.groups for t in g.student)
    assert [t.index for g in batch.groups for t in g.teacher] == [t.index for g in batch.groups for t in g.student]
