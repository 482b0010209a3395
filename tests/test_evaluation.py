"""The one evaluation: its row's keys, intervals, per-category breakdown, and seeded sampling."""

from types import SimpleNamespace

import pytest
import torch

from pbsd_agents.evaluation import Evaluation, summarize, wilson_interval

KEYS = ["success", "success_ci", "success_t1", "success_t1_ci", "pass_at_k", "pass_at_k_ci", "k",
        "mean_action_tokens", "parse_error_rate", "num_tasks"]


def traj(success, category=None, tokens=10, turns=2, errors=0):
    return SimpleNamespace(success=success, num_action_tokens=tokens, turns=turns, num_parse_errors=errors,
                           task_info={"category": category} if category else {})


def test_wilson_interval():
    assert wilson_interval(0, 0) == [0.0, 1.0]
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_summary_keys_rates_and_categories():
    greedy = [traj(True, "simple"), traj(False, "simple", errors=1), traj(True, "parallel")]
    sampled = [[traj(True), traj(False)], [traj(False), traj(False)], [traj(True), traj(True)]]
    row = summarize(greedy, sampled, 2)
    assert list(row)[: len(KEYS)] == KEYS
    assert row["success"] == pytest.approx(2 / 3) and row["success_t1"] == pytest.approx(0.5)
    assert row["pass_at_k"] == pytest.approx(2 / 3) and row["parse_error_rate"] == pytest.approx(1 / 6)
    for key in ("success", "success_t1", "pass_at_k"):
        lo, hi = row[f"{key}_ci"]
        assert lo <= row[key] <= hi
    simple = row["per_category"]["simple"]
    assert simple["num_tasks"] == 2 and simple["success"] == 0.5 and simple["pass_at_k"] == 0.5
    assert row["per_category"]["parallel"]["success_t1"] == 1.0


def test_without_samples_or_categories():
    row = summarize([traj(True), traj(False)], [], 0)
    assert row["success_t1"] is None and row["pass_at_k_ci"] is None and row["k"] == 0
    assert "per_category" not in row
    assert "per_category" not in summarize([SimpleNamespace(**{**vars(traj(True)), "task_info": None})], [], 0)


class RecordingCollector:
    """Stands in for a Collector: each trajectory's success is a draw from torch's global RNG."""

    def __init__(self):
        self.calls = []

    def collect(self, env, tasks, **kw):
        self.calls.append((env, list(tasks), kw))
        return [traj(bool(torch.rand(()) < 0.5)) for _ in tasks]


def test_run_is_seeded_caps_tasks_and_restores_the_rng():
    ev = Evaluation("pbsd/MathCalc-v0", {"split": "test"}, num_tasks=10**6, pass_k=3, temperature=0.7, seed=1)
    assert 0 < ev.num_tasks < 10**6  # capped at the finite split
    ev.num_tasks = 8
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    c = RecordingCollector()
    row, greedy = ev.run(c, step=5, trajectories=40)
    assert torch.equal(torch.random.get_rng_state(), before)
    again, _ = ev.run(RecordingCollector(), step=5, trajectories=40)
    assert again == row and row["step"] == 5 and row["trajectories"] == 40 and len(greedy) == 8
    assert row["greedy_outcomes"] == "".join("1" if t.success else "0" for t in greedy)  # per task, in order
    assert row["greedy_outcomes"].count("1") == round(row["success"] * 8)
    (_, greedy_tasks, g), (_, sampled_tasks, s) = c.calls
    assert greedy_tasks == list(range(8)) and g["temperature"] == 0.0 and g["env_kwargs"] == {"split": "test"}
    assert sampled_tasks == [i for i in range(8) for _ in range(3)] and s["temperature"] == 0.7
    other, _ = Evaluation("pbsd/MathCalc-v0", {"split": "test"}, num_tasks=8, pass_k=3, seed=2).run(RecordingCollector())
    assert other["success_t1"] != row["success_t1"] or other["success"] != row["success"]


def test_bfcl_overall_scores_follow_the_leaderboard():
    from pbsd_agents.evaluation import format_table

    def mt(success, category, passed, scored):
        t = traj(success, category)
        t.task_info["scored_turns"] = scored
        t.outcome = {"turns_passed": passed}
        return t

    greedy = ([traj(True, "simple_python")] * 3 + [traj(False, "simple_python")] + [traj(False, "multiple")]
              + [traj(True, "live_simple")] * 9 + [traj(False, "live_multiple")]
              + [mt(True, "multi_turn_base", 4, 4), mt(False, "multi_turn_base", 1, 4), mt(False, "multi_turn_miss_func", 2, 3)])
    row = summarize(greedy, [], 0)
    bfcl = row["bfcl"]
    assert bfcl["non_live"]["accuracy"] == pytest.approx((0.75 + 0.0) / 2)  # unweighted over the categories present
    assert bfcl["non_live"]["missing"] == ["parallel", "parallel_multiple"]
    assert bfcl["live"]["accuracy"] == pytest.approx(9 / 10)  # weighted by tasks
    assert bfcl["multi_turn"]["accuracy"] == pytest.approx((0.5 + 0.0) / 2)
    assert bfcl["multi_turn_turn_level"] == {"accuracy": pytest.approx(7 / 11), "how": "turns", "num_turns": 11, "num_tasks": 3}
    table = format_table(row)
    assert "BFCL live (weighted by tasks)" in table and "BFCL multi-turn, turn-level" in table and "multi_turn_base" in table
    assert "bfcl" not in summarize([traj(True, "simple")], [], 0)  # another env's categories: no BFCL summary
