"""The study's statistics (scripts/compare_methods.py): bootstrap intervals over tasks and seeds, paired
differences on the same tasks, the one hyper-parameter selection rule, each env's start, and the document
written again from its raw results."""

import json

import numpy as np
import pytest

from scripts.compare_methods import (KEEP, bootstrap_interval, main, outcome_matrix, paired_difference, run_name,
                                     select, starts, tuning_scores)


def outcomes(p: float, tasks: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(tasks) < p).astype(float)


def test_interval_over_tasks_matches_the_binomial_width():
    x = outcomes(0.3, 200, 0)[None, :]  # one seed, 200 tasks
    mean, lo, hi = bootstrap_interval(x)
    assert mean == x.mean() and lo < mean < hi
    normal_half = 1.96 * np.sqrt(mean * (1 - mean) / 200)
    assert (hi - lo) / 2 == pytest.approx(normal_half, rel=0.15)
    assert bootstrap_interval(np.ones((3, 50))) == (1.0, 1.0, 1.0)


def test_seed_to_seed_variation_widens_the_interval():
    tasks = outcomes(0.3, 200, 1)
    alike = np.stack([tasks, tasks, tasks])
    apart = np.stack([tasks * 0, tasks, np.maximum(tasks, outcomes(0.6, 200, 2))])  # seeds that learned differently
    width = lambda m: bootstrap_interval(m)[2] - bootstrap_interval(m)[1]  # noqa: E731
    assert width(apart) > 2 * width(alike)


def test_paired_difference_sees_a_gain_that_separate_intervals_cannot():
    base = np.stack([outcomes(0.3, 200, s) for s in range(3)])
    better = base.copy()
    better[:, :15] = 1  # the same few tasks solved in every seed: about +0.05
    d, lo, hi = paired_difference(better, base)
    assert d == pytest.approx((better - base).mean()) and 0 < lo < d < hi
    _, base_lo, base_hi = bootstrap_interval(base)
    _, better_lo, _ = bootstrap_interval(better)
    assert better_lo < base_hi  # side by side, the two intervals overlap
    assert hi - lo < base_hi - base_lo  # pairing removes the variance of task difficulty
    assert paired_difference(base, base) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds and tasks"):
        paired_difference(base, base[:, :100])


def test_outcome_matrix_orders_seeds_and_refuses_older_results():
    run = lambda seed, o: {"seed": seed, "curve": [{"outcomes": "00"}, {"outcomes": o}]}  # noqa: E731
    assert outcome_matrix([run(1, "011"), run(0, "100")]).tolist() == [[1, 0, 0], [0, 1, 1]]
    assert outcome_matrix([run(0, "100"), {"seed": 1, "curve": [{"success": 0.5}]}]) is None


def test_selection_is_one_rule_for_every_method():
    def result(method, lr, beta, seed, greedy, t1):
        return {"env": "e", "method": method, "lr": lr, "beta": beta, "seed": seed,
                "curve": [{"success": 0.0, "success_t1": 0.0}, {"success": greedy, "success_t1": t1}]}

    results = [
        # PBSD: the mean over seeds decides (lr 3e-4 wins on mean greedy, though one seed of 1e-3 is higher)
        result("PBSD", 3e-4, 0.1, 0, 0.20, 0.1), result("PBSD", 3e-4, 0.1, 1, 0.20, 0.1),
        result("PBSD", 1e-3, 0.1, 0, 0.30, 0.1), result("PBSD", 1e-3, 0.1, 1, 0.00, 0.1),
        # a greedy tie is broken by T=1 success, then by the lower learning rate, then the lower β
        result("PBSD", 3e-4, 0.3, 0, 0.20, 0.1), result("PBSD", 3e-4, 0.3, 1, 0.20, 0.1),
        result("SeqKD", 1e-4, None, 0, 0.10, 0.05), result("SeqKD", 3e-4, None, 0, 0.10, 0.20),
        result("GRPO", 1e-4, None, 0, 0.10, 0.05), result("GRPO", 3e-4, None, 0, 0.10, 0.05),
    ]
    picks = select(results)["e"]
    assert (picks["PBSD"]["lr"], picks["PBSD"]["beta"], picks["PBSD"]["seeds"]) == (3e-4, 0.1, 2)
    scores = {(r["method"], r["lr"], r["beta"]): r["val_success"] for r in tuning_scores(results)}
    assert scores[("PBSD", 1e-3, 0.1)] == 0.15  # the mean over seeds
    assert picks["SeqKD"]["lr"] == 3e-4 and picks["GRPO"]["lr"] == 1e-4
    assert run_name("pbsd/MathCalc-v0", "PBSD+", 2, 3e-4, 0.1) == "MathCalc-v0__PBSDplus__lr0.0003__b0.1__s2"


def test_each_env_has_its_own_start_or_all_share_one():
    envs = ["pbsd/MathCalc-v0", "pbsd/ToolCall-v0"]
    assert starts(["runs/w"], envs) == dict.fromkeys(envs, "runs/w")
    assert starts(["pbsd/ToolCall-v0=runs/t", "pbsd/MathCalc-v0=runs/m"], envs) == {
        "pbsd/MathCalc-v0": "runs/m", "pbsd/ToolCall-v0": "runs/t"}
    for bad in (["pbsd/MathCalc-v0=runs/m"], ["pbsd/MathCalc-v0=runs/m", "pbsd/ToolCal-v0=runs/t"],
                ["pbsd/MathCalc-v0=", "pbsd/ToolCall-v0=runs/t"], ["runs/m", "runs/t"]):
        with pytest.raises(ValueError, match="ENV=PATH for each of pbsd/MathCalc-v0, pbsd/ToolCall-v0"):
            starts(bad, envs)


def test_rewrite_writes_the_document_from_the_raw_results_beside_it(tmp_path, capsys):
    def run(method, seed, outcomes):
        curve = [{"step": 0, "trajectories": 0, "tokens": 0, "success": 0.5, "outcomes": "10" * 5},
                 {"step": 8, "trajectories": 256, "tokens": 9000, "success": outcomes.count("1") / 10,
                  "outcomes": outcomes}]
        return {"env": "pbsd/MathCalc-v0", "method": method, "seed": seed, "curve": curve, "lr": 1e-4,
                "beta": None, "wall_s": 10.0, "steps": 8, "skipped": 0}

    results = [run("GRPO", 0, "1111111100"), run("GRPO", 1, "1111111000"),
               run("SeqKD", 0, "1111100000"), run("SeqKD", 1, "1111000000")]
    (tmp_path / "compare_results.json").write_text(json.dumps(results))
    tuned = {"pbsd/MathCalc-v0": {"GRPO": {"lr": 1e-4, "beta": None, "val_success": 0.4, "val_success_t1": 0.2,
                                           "seeds": 1}}}
    tuning = [{"env": "pbsd/MathCalc-v0", "method": "GRPO", "lr": lr, "beta": None, "val_success": v,
               "val_success_t1": 0.2, "seeds": 1} for lr, v in ((1e-3, 0.1), (1e-4, 0.4))]
    (tmp_path / "compare_meta.json").write_text(json.dumps({"command": "python scripts/compare_methods.py --x",
                                                            "tuned": tuned, "tuning": tuning}))
    doc = tmp_path / "RESULTS.md"
    doc.write_text("old tables\n" + KEEP + "\nthe reading, by hand\n")
    assert main(["--rewrite", "--out", str(doc)]) == 0
    text = doc.read_text()
    assert "old tables" not in text and text.endswith("the reading, by hand\n")
    assert "`python scripts/compare_methods.py --x`" in text and "best baseline GRPO" in text
    assert "| GRPO | 2 | 0.750 [" in text and "| SeqKD | 2 | 0.450 [" in text
    assert "| -0.300 [" in text  # SeqKD paired against GRPO on the same tasks and seeds
    assert "| +0.250 [" in text and "| -0.050 [" in text  # each against the start (0.5) on the same tasks
    assert "| pbsd/MathCalc-v0 | GRPO | 0.0001 | — | 0.400 | 0.200 | 1 |" in text
    # every tuning setting, lowest rate first, the one the study ran marked
    assert ("| GRPO | 0.0001 | — | 0.400 | 0.200 | 1 | ✓ |\n"
            "| pbsd/MathCalc-v0 | GRPO | 0.001 | — | 0.100 | 0.200 | 1 |  |") in text
    assert (tmp_path / "compare_MathCalc-v0.png").exists()
    (tmp_path / "compare_results.json").unlink()
    with pytest.raises(SystemExit):
        main(["--rewrite", "--out", str(doc)])
    assert "--rewrite needs" in capsys.readouterr().err
