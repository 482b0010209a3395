"""pbsd_agents.grid: a resumable grid of runs (finished runs skipped, failed ones retried), run in parallel."""

import json

import pytest

from pbsd_agents.cli.common import parse_kv
from pbsd_agents.grid import run_grid, train


def threads(spec: dict) -> dict:
    import torch

    return {"threads": torch.get_num_threads()}


def train_threads(config: dict) -> dict:
    import torch

    train(config)
    return {"threads": torch.get_num_threads()}


def square(spec: dict) -> dict:
    if spec.get("fail"):
        raise RuntimeError("broken run")
    return {"x": spec["x"], "y": spec["x"] ** 2}


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_are_saved_per_run_and_a_rerun_retries_only_the_failed(tmp_path, capsys, jobs):
    runs = {"a": {"x": 2}, "b": {"x": 3, "fail": True}, "c": {"x": 4}}
    results, failed = run_grid(runs, square, tmp_path, jobs=jobs, describe=lambda name, r: f"{name} -> {r['y']}")
    out = capsys.readouterr().out
    assert failed == ["b"] and sorted(results) == ["a", "c"] and results["c"] == {"x": 4, "y": 16}
    assert "0 of 3 runs already done" in out and "run b failed: RuntimeError: broken run" in out and "c -> 16" in out
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2, "y": 4} and not (tmp_path / "b.json").exists()

    (tmp_path / "a.json").write_text(json.dumps({"x": 2, "y": "kept"}))  # a finished run is not run again
    runs["b"].pop("fail")
    results, failed = run_grid(runs, square, tmp_path, jobs=jobs)
    assert "2 of 3 runs already done; 1 to run" in capsys.readouterr().out
    assert failed == [] and results == {"a": {"x": 2, "y": "kept"}, "b": {"x": 3, "y": 9}, "c": {"x": 4, "y": 16}}


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_run_gets_one_thread_and_the_caller_keeps_its_own(tmp_path, jobs):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results, _ = run_grid({"a": {}, "b": {}}, threads, tmp_path, jobs=jobs, quiet=True)
        assert results == {"a": {"threads": 1}, "b": {"threads": 1}} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_grid_run_trains_on_its_one_thread_unless_its_config_says_otherwise(tmp_path, tiny_model, monkeypatch):
    # when a grid's runs start together, each sees the cores idle: the trainer's automatic count would give each all
    monkeypatch.setattr("pbsd_agents.loading.idle_cores", lambda: 2)
    config = dict(model=tiny_model, env="pbsd/MathCalc-v0", steps=1, tasks_per_step=1, eval_tasks=1, max_new_tokens=4,
                  max_tokens=16, save_every=0, progress=False)
    runs = {"auto": {**config, "out": str(tmp_path / "auto")},
            "two": {**config, "threads": 2, "out": str(tmp_path / "two")}}
    results, failed = run_grid(runs, train_threads, tmp_path / "results", quiet=True)
    assert failed == [] and results == {"auto": {"threads": 1}, "two": {"threads": 2}}


def test_parse_kv_reads_yaml_values_and_names_the_flag():
    assert parse_kv(["beta=0.1", "pair-filter=verifier", "nll_coef=", "on=true"], "--algo-arg") == {
        "beta": 0.1, "pair_filter": "verifier", "nll_coef": "", "on": True}
    with pytest.raises(ValueError, match="--algo-arg expects KEY=VALUE"):
        parse_kv(["beta"], "--algo-arg")
