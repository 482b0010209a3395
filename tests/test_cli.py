"""The command line as a user meets it: fast start-up, defaults in every --help, a user's own env, eval's defaults."""

import json
import subprocess
import sys

import pytest
import yaml

from pbsd_agents.cli import SUBCOMMANDS, main

PROBE = """
import sys
from pbsd_agents.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["envs"]] + [[name, "--help"] for name in SUBCOMMANDS],
                         ids=lambda a: " ".join(a))
def test_help_and_envs_start_without_torch(argv):
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("HEAVY []"), out[-500:]


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_help_shows_defaults(name):
    from pbsd_agents.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[name]
    formatter = sub._get_formatter()
    for action in sub._actions:
        repeatable = type(action).__name__ == "_AppendAction"
        if not action.option_strings or action.dest == "help" or action.nargs == 0 or repeatable or action.default is None:
            continue  # positionals, switches, repeatable options and options without a default show none
        assert "(default" in formatter._get_help_string(action), (name, action.dest)


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    """A user's module that registers an env when imported, named the gymnasium way: ``module:Name-v0``
    (the env class is one of the kit's, so this tests the naming, not a new env)."""
    (tmp_path / "my_user_envs.py").write_text(
        "import gymnasium\n\ngymnasium.register('my/Sums-v0', entry_point='pbsd_agents.envs.mathcalc:MathCalcEnv')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_user_envs:my/Sums-v0"


def test_rollout_and_eval_take_a_users_module_env(user_env, tiny_model, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["rollout", "--env", user_env, "--model", tiny_model, "--n", "2", "--out", str(out),
                 "--max-new-tokens", "4", "--max-tokens", "8", "--no-progress", "--check"]) == 0, capsys.readouterr()
    assert [json.loads(line)["env_id"] for line in out.read_text().splitlines()] == [user_env] * 2
    capsys.readouterr()
    assert main(["eval", "--env", user_env, "--model", tiny_model, "--n", "2", "--max-new-tokens", "4",
                 "--max-tokens", "8", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["num_tasks"] == 2


def test_an_unknown_module_is_one_line(capsys):
    assert main(["envs"]) == 0 and main(["eval", "--env", "no_such_module_xyz:my/Env-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot import module 'no_such_module_xyz'" in err


def _eval_args(model, *argv):
    from pbsd_agents.cli import build_parser

    return build_parser().parse_args(["eval", "--model", str(model), *argv])


def test_eval_defaults_come_from_the_checkpoints_run(tmp_path):
    from pbsd_agents.cli.eval import settings

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_000004"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 4, "trajectories": 32}))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "env": "pbsd/ToolCall-v0", "env_kwargs": {"max_turns": 3}, "eval_env_kwargs": {"split": "dev"},
        "max_new_tokens": 12, "max_tokens": 40, "seed": 5, "temperature": 0.7, "eval_tasks": 16, "pass_k": 2,
        "an_old_key": 1}))
    s = settings(_eval_args(ckpt))
    assert s == {"env": "pbsd/ToolCall-v0", "env_kwargs": {"max_turns": 3, "split": "dev"}, "temperature": 0.7,
                 "num_tasks": 16, "pass_k": 2, "max_new_tokens": 12, "max_tokens": 40, "seed": 5}
    s = settings(_eval_args(ckpt, "--max-tokens", "99", "--split", "test", "--env-arg", "max_turns=4", "--seed", "0"))
    assert s["max_tokens"] == 99 and s["env_kwargs"] == {"max_turns": 4, "split": "test"} and s["seed"] == 0
    # another env does not inherit the run's env arguments
    assert settings(_eval_args(ckpt, "--env", "pbsd/MathCalc-v0"))["env_kwargs"] == {"split": "test"}
    # a plain model: TrainConfig's defaults (the env `pbsd-agents train` uses)
    from pbsd_agents.config import TrainConfig

    plain = settings(_eval_args(tmp_path / "some-model"))
    assert plain["env"] == TrainConfig().env and plain["max_new_tokens"] == TrainConfig().max_new_tokens
    assert (plain["num_tasks"], plain["pass_k"]) == (100, 0)


def test_envs_lists_a_users_env_too(user_env, capsys):
    from pbsd_agents.envs.registry import resolve_env_id

    resolve_env_id(user_env)
    assert main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("my/Sums-v0") and "MathCalcEnv" in line for line in lines)
    assert any(line.startswith("pbsd/MathCalc-v0") and "arithmetic" in line for line in lines)
