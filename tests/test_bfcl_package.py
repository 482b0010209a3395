"""pbsd/BFCL-v0 on the installed bfcl-eval package: every AST category, the oracle, the data errors, and
agreement with the leaderboard's own ``ast_checker`` on gold and mutated calls."""

import copy
import sys
import time
from collections import Counter

import gymnasium
import pytest

import pbsd_agents  # noqa: F401  (registers the environments)
from pbsd_agents.envs.bfcl import BFCLEnv, first_acceptable_call
from pbsd_agents.envs.bfcl_package import AST_CATEGORIES, INSTALL, data_dir
from pbsd_agents.envs.checker import acceptable_values, check_calls, omittable
from pbsd_agents.testing import check_env
from tests.support import bfcl_eval_or_skip, official_ast_checker

# Tasks of the package's data that no call can satisfy, found by the loader (both splits).
KNOWN_DATA_ERRORS = {
    "live_simple_106-63-0": "has no acceptable value",
    "live_simple_112-68-0": "has no acceptable value",
    "live_multiple_862-181-3": "is not in its schema",
    "live_multiple_964-207-0": "is not in its schema",
}


@pytest.fixture(scope="module", autouse=True)
def _package():
    bfcl_eval_or_skip()


def all_tasks(category):
    return BFCLEnv(category=category, split="test", holdout_every=None)


def test_missing_package_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "bfcl_eval", None)  # what a machine without the package sees
    with pytest.raises(ValueError) as err:
        BFCLEnv(category="simple_python")
    assert "\n" not in str(err.value) and INSTALL in str(err.value)


def test_category_argument_errors():
    with pytest.raises(ValueError, match=r"unknown BFCL category 'simple'; valid: simple_python, multiple, "):
        BFCLEnv(category="simple")
    with pytest.raises(ValueError, match="not both"):
        BFCLEnv(category="multiple", data_path=data_dir() / "BFCL_v4_multiple.json")
    with pytest.raises(ValueError, match="unknown BFCL category 'multi_turn_base'"):
        BFCLEnv(category=["multiple", "multi_turn_base"])


def test_every_category_loads_and_its_oracle_scores_one():
    errors, total = {}, 0
    for category in AST_CATEGORIES:
        env = gymnasium.make("pbsd/BFCL-v0", category=category, split="test", holdout_every=None)
        u = env.unwrapped
        assert u.num_tasks > 0
        errors.update(u.data_errors)
        for i in range(u.num_tasks):
            _, info = env.reset(options={"index": i})
            assert info["category"] == category
            _, reward, *_, step = env.step(u.oracle_actions()[0])
            assert (reward == 1.0) == (info["task_id"] not in u.data_errors), (info["task_id"], step)
            total += 1
    assert {k: next(r for r in KNOWN_DATA_ERRORS.values() if r in v) for k, v in errors.items()} == KNOWN_DATA_ERRORS
    assert total == 3491


def test_all_categories_at_once_with_splits():
    test = BFCLEnv(category="all", split="test")
    train = BFCLEnv(category="all", split="train")
    assert test.num_tasks + train.num_tasks == 3491
    assert not {r["id"] for r in test.records} & {r["id"] for r in train.records}
    assert {r["category"] for r in test.records} == set(AST_CATEGORIES)


def test_path_and_package_give_the_same_tasks():
    by_path = BFCLEnv(data_path=data_dir() / "BFCL_v4_live_parallel.json", split="test", holdout_every=None)
    by_name = BFCLEnv(category="live_parallel", split="test", holdout_every=None)
    assert by_path.records == by_name.records


def test_first_reset_is_fast():
    env = BFCLEnv(category="live_multiple", split="test", holdout_every=None)
    env.reset(options={"index": 0})  # schemas met before are not checked again
    start = time.perf_counter()
    for i in range(1, 101):
        env.reset(options={"index": i})
    assert (time.perf_counter() - start) / 100 < 0.01


def test_check_env_on_the_package_data():
    check_env(gymnasium.make("pbsd/BFCL-v0", category=["simple_python", "live_multiple", "live_irrelevance"], split="test"),
              num_fuzz=300)


# ---- agreement with the leaderboard's ast_checker -------------------------------------------------


def _value_mutations(value):
    """Variants of one argument value: some the gold still accepts, most it does not."""
    if isinstance(value, bool):
        return [not value, int(value)]
    if isinstance(value, int):
        return [value + 1, float(value), str(value), -value]
    if isinstance(value, float):
        return [value + 0.5, int(value), str(value)]
    if isinstance(value, str):
        return [value + "x", value.upper(), value.swapcase(), "", value.replace(" ", "_"), value + " "]
    if isinstance(value, list):
        out = [[], list(reversed(value)), value[:-1], value + value[:1]]
        out.append([v.upper() if isinstance(v, str) else v for v in value])
        return out
    if isinstance(value, dict):
        out = [{**value, "zz_extra": 1}]
        for k, v in value.items():
            out.append({kk: vv for kk, vv in value.items() if kk != k})
            out += [{**value, k: m} for m in _value_mutations(v)[:3]]
        return out
    return [None]


def candidates(rec, underscore):
    """(kind, calls) for one task: the oracle's calls, other acceptable values, and mutations."""
    by_name = {f["name"]: f for f in rec["functions"]}
    shown = (lambda n: n.replace(".", "_")) if underscore else (lambda n: n)
    if rec["gold"] is None:  # irrelevance and relevance: whether a call is made is all that counts
        yield "no_call", []
        yield "a_call", [(shown(f["name"]), {}) for f in rec["functions"][:2]]
        return
    base = [first_acceptable_call(g, by_name.get(next(iter(g)))) for g in rec["gold"]]
    base = [(shown(n), a) for n, a in base]
    yield "gold", base
    yield "no_call", []
    for ci, ((name, args), g) in enumerate(zip(base, rec["gold"])):
        def with_args(new_args, ci=ci, name=name):
            calls = copy.deepcopy(base)
            calls[ci] = (name, new_args)
            return calls

        ((_, params),) = g.items()
        required = set((by_name.get(next(iter(g)), {}).get("parameters") or {}).get("required") or [])
        for p, alts in params.items():
            for alt in acceptable_values(alts)[1:3]:
                yield "other_alternative", with_args({k: v for k, v in args.items() if k != p} if alt == "" else {**args, p: alt})
            if omittable(alts) and p not in args:
                yield "optional_given_empty", with_args({**args, p: [] if isinstance(_first_real(alts), list) else ""})
        for p, value in args.items():
            for m in _value_mutations(value):
                yield "value", with_args({**args, p: m})
            yield "drop_param", with_args({k: v for k, v in args.items() if k != p})
        yield "extra_param", with_args({**args, "zz_extra": 1})
        for p in set(((by_name.get(next(iter(g)), {}).get("parameters") or {}).get("properties") or {})) - set(args):
            yield "schema_param_not_in_gold" if p not in params else "optional_param", with_args({**args, p: "x"})
        yield "wrong_name", [(n + "_x", a) if i == ci else (n, a) for i, (n, a) in enumerate(base)]
        dotted = next(iter(g))
        if "." in dotted:
            other = dotted if underscore else dotted.replace(".", "_")
            yield "other_name_style", [(other, a) if i == ci else (n, a) for i, (n, a) in enumerate(base)]
        if required - set(args):
            yield "gold_missing_required", base
    if len(base) > 1:
        yield "drop_call", base[1:]
        yield "swap_calls", base[::-1]
    yield "duplicate_call", base + base[:1]


def _first_real(alts):
    return next((a for a in acceptable_values(alts) if a != ""), None)


def official_verdict(rec, calls, underscore):
    checker, python = official_ast_checker()
    category = rec["category"]
    if rec["mode"] in ("irrelevance", "relevance"):
        # The leaderboard's rule for these: did the model make a call (any decodable, non-empty one).
        return (not calls) if rec["mode"] == "irrelevance" else bool(calls)
    try:
        out = checker(copy.deepcopy(rec["functions"]), [{n: copy.deepcopy(a)} for n, a in calls],
                      copy.deepcopy(rec["gold"]), python, category, "under" if underscore else "plain")
    except Exception as exc:  # noqa: BLE001  (the leaderboard's checker fails on some inputs: counted apart)
        return type(exc).__name__
    return bool(out["valid"])


def agreement(categories, split, underscore_modes=(False, True)):
    stats = Counter()
    disagreements = []
    for category in categories:
        env = BFCLEnv(category=category, split="test" if split == "all" else split, holdout_every=None if split == "all" else 5)
        for rec in env.records:
            for underscore in underscore_modes:
                for kind, calls in candidates(rec, underscore):
                    official = official_verdict(rec, calls, underscore)
                    if not isinstance(official, bool):
                        stats[(category, "official_raised")] += 1
                        continue
                    ours = check_calls(calls, rec["gold"] or [], rec["functions"], rec["mode"], underscore_names=underscore).ok
                    stats[(category, "candidates")] += 1
                    stats[(category, "accepted")] += official
                    if ours != official:
                        disagreements.append((rec["id"], underscore, kind, calls, official))
    return stats, disagreements


def test_agreement_with_the_official_ast_checker_on_the_test_split():
    stats, disagreements = agreement(AST_CATEGORIES, "test", underscore_modes=(False,))
    assert not disagreements, disagreements[:5]
    for category in AST_CATEGORIES:
        assert stats[(category, "candidates")] > 0
    assert sum(v for (c, k), v in stats.items() if k == "candidates") > 10_000


@pytest.mark.slow
def test_agreement_with_the_official_ast_checker_everywhere():
    stats, disagreements = agreement(AST_CATEGORIES, "all")
    for category in AST_CATEGORIES:
        print(category, {k: stats[(category, k)] for k in ("candidates", "accepted", "official_raised")})
    print("disagreements:", Counter(d[2] for d in disagreements), disagreements[:3])
    assert not disagreements, disagreements[:5]


def test_a_backend_whose_dependency_is_missing_is_a_one_line_error(monkeypatch):
    from pbsd_agents.envs.bfcl_package import backend_class

    monkeypatch.setitem(sys.modules, "mpmath", None)  # what a --no-deps install without the extra sees
    monkeypatch.delitem(sys.modules, "bfcl_eval.eval_checker.multi_turn_eval.func_source_code.math_api", raising=False)
    with pytest.raises(ValueError, match=r"the BFCL backend MathAPI needs the package 'mpmath'.*pbsd-agents\[bfcl\]"):
        backend_class("MathAPI")
    assert backend_class("TwitterAPI").__name__ == "TwitterAPI"
    with pytest.raises(ValueError, match="unknown BFCL backend class 'Nope'; known: GorillaFileSystem, "):
        backend_class("Nope")


def test_eval_cli_reports_the_leaderboard_summaries(tiny_model, capsys):
    import json

    from pbsd_agents.cli import main

    code = main(["eval", "--model", tiny_model, "--env", "pbsd/BFCL-v0", "--env-arg", "category=[simple_python,live_simple]",
                 "--env-arg", "holdout_every=40", "--n", "20", "--max-new-tokens", "4", "--max-tokens", "8", "--no-progress"])
    assert code == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert set(row["per_category"]) == {"simple_python", "live_simple"}
    assert row["bfcl"]["non_live"]["missing"] == ["multiple", "parallel", "parallel_multiple"]
    assert row["bfcl"]["live"]["categories"] == ["live_simple"]
    assert "BFCL non-live (unweighted mean)" in err and "live_simple" in err
