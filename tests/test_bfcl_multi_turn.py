"""pbsd/BFCLMultiTurn-v0: the oracle on every task, per-turn perturbations, agreement with the
leaderboard's own multi_turn_checker, check_env, per-turn privileged context through the collector,
and a short PBSD run through the CLI."""

import copy
import itertools
import json
import time
from collections import Counter

import gymnasium
import pytest

import pbsd_agents  # noqa: F401  (registers the environments)
from pbsd_agents.envs.bfcl_multi_turn import NO_FUNCTION, NOTE_ASK, NOTE_MISSING_FUNCTION, BFCLMultiTurnEnv
from pbsd_agents.envs.bfcl_package import MULTI_TURN_CATEGORIES
from pbsd_agents.episode import play, play_oracle
from pbsd_agents.testing import check_env
from pbsd_agents.tools.parsers import format_tool_calls
from tests.support import bfcl_eval_or_skip, official_multi_turn_checker

ENV_ID = "pbsd/BFCLMultiTurn-v0"
KINDS = ("wrong_argument", "missing_call", "extra_mutating_call", "moved_call")


@pytest.fixture(scope="module", autouse=True)
def _package():
    bfcl_eval_or_skip()


_ENVS: dict = {}


def full_env(category) -> BFCLMultiTurnEnv:
    """Every task of a category (no holdout), one env per category for the whole module."""
    if category not in _ENVS:
        _ENVS[category] = BFCLMultiTurnEnv(category=category, split="test", holdout_every=None)
    return _ENVS[category]


def episode_for(env, index, turns_calls):
    """Play one task with the given calls per user turn (one step of calls, then a reply without one)."""
    actions = []
    for calls in turns_calls:
        if calls:
            actions.append(format_tool_calls(calls, env.tool_format))
        actions.append("Done.")
    return play(env, actions, options={"index": index})


# ---- the oracle and the episode's shape ---------------------------------------------------------


def test_oracle_scores_one_on_every_task_of_every_category():
    steps, seconds, failures = 0, 0.0, []
    for category in MULTI_TURN_CATEGORIES:
        env = full_env(category)
        assert env.num_tasks == 200 and env.data_errors == {}
        start = time.perf_counter()
        for i in range(env.num_tasks):
            ep = play_oracle(env, options={"index": i})
            steps += ep.turns
            info = ep.last_step[4]
            if not (ep.success and ep.reward == 1.0 and all(p is not False for p in info["turn_passed"])):
                failures.append((env.task.task_id, info.get("check_message")))
        seconds += time.perf_counter() - start
    assert failures == []
    print(f"oracle: 800 tasks, {steps} steps, {steps / seconds:.0f} steps/s")


def test_episode_shape_turns_and_privileged_notes():
    env = gymnasium.make(ENV_ID, holdout_every=None)
    obs, info = env.reset(options={"index": 0})
    assert [m["role"] for m in obs] == ["system", "user"] and info["num_turns"] == info["scored_turns"] == 4
    assert info["privileged"] == format_tool_calls([("cd", {"folder": "document"}), ("mkdir", {"dir_name": "temp"}),
                                                   ("mv", {"source": "final_report.pdf", "destination": "temp"})])
    assert info["privileged"] not in json.dumps(obs)
    oracle = env.unwrapped.oracle_actions()
    obs, reward, terminated, truncated, step = env.step(oracle[0])  # three calls, three results
    assert [m["role"] for m in obs] == ["tool"] * 3 and "privileged" not in step and not (terminated or truncated)
    obs, reward, terminated, truncated, step = env.step("Done.")  # no call: the next user turn, with its note
    assert [m["role"] for m in obs] == ["user"] and step["user_turn"] == 1
    assert step["privileged"].startswith("<tool_call>") and '"grep"' in step["privileged"]
    teacher = env.unwrapped.teacher_messages(obs, step["privileged"])
    assert step["privileged"] in teacher[0]["content"] and obs[0]["content"] in teacher[0]["content"]


def test_miss_func_announces_the_held_out_function_at_its_turn():
    env = full_env("multi_turn_miss_func")
    _, info = env.reset(options={"index": 0})
    names = [t["function"]["name"] for t in info["tools"]]
    assert "sort" not in names and "mv" in names
    oracle = env.oracle_actions()
    assert env.task.gold[2] == [] and oracle[4] == NO_FUNCTION
    for action in oracle[:4]:
        env.step(action)
    obs, _, _, _, step = env.step(oracle[4])  # turn 2 ends: turn 3 brings the function
    assert step["privileged"] == format_tool_calls([("sort", {"file_name": "final_report.pdf"})])
    assert '"name": "sort"' in obs[0]["content"] and "can now also use" in obs[0]["content"]
    # turn 2 (gold empty) gets the note for a missing function
    env.reset(options={"index": 0})
    for action in oracle[:4]:
        _, _, _, _, step = env.step(action)
    assert step["privileged"] == NOTE_MISSING_FUNCTION


def test_miss_param_note_and_guessing_fails():
    env = full_env("multi_turn_miss_param")
    env.reset(options={"index": 0})
    oracle = env.oracle_actions()
    gold = env.task.gold
    k = next(i for i, t in enumerate(gold) if not t)
    notes = []
    for action in oracle:
        _, _, done, _, step = env.step(action)
        notes.append(step.get("privileged"))
    assert NOTE_ASK in notes
    # the asking turn is not scored; what the model does in it still counts later, as on the leaderboard:
    # a right guess passes, a guess that changes the state otherwise fails the next scored turn
    right = [list(t) for t in gold]
    right[k] = list(gold[k + 1])
    ep = episode_for(env, 0, right)
    assert ep.last_step[4]["turn_passed"][k] is None and ep.success == official_valid(env, 0, right) is True
    wrong = [list(t) for t in gold]
    wrong[k] = [_mutating_call(env, 0, gold, k)]
    assert wrong[k][0] is not None
    ep = episode_for(env, 0, wrong)
    assert ep.last_step[4]["turn_passed"][k + 1] is False and ep.success == official_valid(env, 0, wrong) is False


def test_replays_never_change_the_task():
    # post_tweet keeps its mentions list and mention() extends it later: the gold calls must survive
    env = full_env("multi_turn_base")
    env.reset(options={"index": 90})
    gold = copy.deepcopy(env.task.gold)
    for _ in range(3):
        assert play_oracle(env, options={"index": 90}).success
    assert env.task.gold == gold


def test_partial_reward_and_step_limit():
    env = BFCLMultiTurnEnv(split="test", holdout_every=None, partial_reward=True, max_steps_per_turn=2)
    env.reset(options={"index": 1})
    gold = env.task.gold
    ep = episode_for(env, 1, [gold[0], [], *gold[2:]])
    info = ep.last_step[4]
    assert info["turn_passed"][1] is False and 0 < ep.reward == pytest.approx(info["turns_passed"] / info["turns_scored"])
    assert ep.reward < 1
    assert not ep.success
    env.reset(options={"index": 1})
    env.step(format_tool_calls([("pwd", {})]))
    _, reward, terminated, truncated, info = env.step(format_tool_calls([("pwd", {})]))
    assert (reward, terminated, truncated, info["truncated_reason"], info["success"]) == (0.0, False, True, "max_steps_per_turn", False)


def test_malformed_and_unknown_calls_go_back_to_the_model():
    env = gymnasium.make(ENV_ID, holdout_every=None)
    env.reset(options={"index": 0})
    obs, _, _, _, info = env.step('<tool_call>{"name": "cd", "arguments": {"folder": 3}}</tool_call>'
                                  '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call><tool_call>{bad</tool_call>')
    assert [m["content"].split(":")[0] for m in obs] == ["error"] * 3
    assert info["num_parse_errors"] == 1 and "invalid arguments for tool 'cd'" in obs[0]["content"]


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown BFCL category 'multi_turn'; valid: multi_turn_base, "):
        BFCLMultiTurnEnv(category="multi_turn")
    with pytest.raises(ValueError, match="max_steps_per_turn must be a positive int"):
        BFCLMultiTurnEnv(max_steps_per_turn=0)
    env = BFCLMultiTurnEnv(category="all", split="train")
    assert env.num_tasks == 640 and {r["category"] for r in env.records} == set(MULTI_TURN_CATEGORIES)


@pytest.mark.parametrize("fmt", ["json", "python"])
def test_other_call_formats(fmt):
    env = gymnasium.make(ENV_ID, category="all", split="test", tool_format=fmt)
    for i in range(0, env.unwrapped.num_tasks, 16):
        assert play_oracle(env, options={"index": i}).success


def test_check_env_passes_on_every_category():
    for category in MULTI_TURN_CATEGORIES:
        report = check_env(gymnasium.make(ENV_ID, category=category, split="test"), num_fuzz=400)
        assert report.oracle_episodes == 3


# ---- perturbations and the leaderboard's checker ------------------------------------------------


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]
    if isinstance(value, dict):
        return {**value, "zz": 1}
    return "x"


def _state(backends):
    return {cls: {k: copy.deepcopy(v) for k, v in vars(inst).items() if not k.startswith("_")}
            for cls, inst in backends.instances.items()}


def _mutating_call(env, index, gold, k):
    """A call that changes the state when made after turn k's gold calls (found by running it)."""
    rec = env.records[index]
    pool = [c for t in gold for c in t] + [c for t in gold for c in t][::-1]
    for call in pool:
        b = env._backends(rec)
        for turn in gold[: k + 1]:
            for name, args in turn:
                b.call(name, args)
        before = _state(b)
        b.call(*call)
        try:
            if _state(b) != before:
                return call
        except Exception:  # noqa: BLE001  (states that do not compare are skipped)
            continue
    return None


def _fails_at(env, index, gold, turns, f):
    """Whether turn f of ``turns`` fails the leaderboard's rule, worked out here by running both call
    sequences: no call in the turn, another state, or a gold result of the turn never returned."""
    if not turns[f]:
        return True
    rec = env.records[index]
    g, m = env._backends(rec), env._backends(rec)
    for turn in gold[: f + 1]:
        gold_results = [g.call(name, args) for name, args in turn]
    for turn in turns[: f + 1]:
        for name, args in turn:
            m.call(name, args)
    try:
        if _state(m) != _state(g):
            return True
    except Exception:  # noqa: BLE001  (states that do not compare: not a clean perturbation)
        return False
    return bool(Counter(gold_results) - Counter(m.results))


def perturb(env, index, kind, k):
    """``(turns, f)``: the gold calls per turn with turn k perturbed so that turn f (k, or the turn a
    call moved to when it moved earlier) fails; None when no such perturbation of this kind exists."""
    gold = [list(t) for t in env.task.gold]
    turn = gold[k]
    if not turn:
        return None
    options = []
    if kind == "wrong_argument":
        options = [(k, turn[:i] + [(name, {**args, key: _changed(args[key])})] + turn[i + 1:])
                   for i, (name, args) in enumerate(turn) for key in sorted(args)]
    elif kind == "missing_call":
        options = [(k, turn[:i] + turn[i + 1:]) for i in range(len(turn))]
    elif kind == "extra_mutating_call":
        call = _mutating_call(env, index, gold, k)
        options = [(k, turn + [call])] if call is not None else []
    elif kind == "moved_call":
        for i in range(len(turn)):
            rest = turn[:i] + turn[i + 1:]
            if k + 1 < len(gold):
                options.append((k, rest, k + 1, gold[k + 1] + [turn[i]]))
            elif k > 0 and gold[k - 1]:
                options.append((k - 1, rest, k - 1, [turn[i]] + gold[k - 1]))
    for option in options:
        turns = [list(t) for t in gold]
        if kind == "moved_call":
            f, rest, other, moved = option
            turns[k], turns[other] = rest, moved
        else:
            f, turns[k] = option
        if _fails_at(env, index, gold, turns, f):
            return turns, f
    return None


def call_text(name, args):
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


_RUN = itertools.count()


def official_valid(env, index, turns_calls, upto=None):
    """The leaderboard's verdict on a call sequence (turns 0..upto): the package's own checker."""
    import bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils as utils

    rec = env.records[index]
    upto = len(turns_calls) - 1 if upto is None else upto
    decoded = [[[call_text(n, a) for n, a in calls]] if calls else [] for calls in turns_calls[: upto + 1]]
    entry = {"id": rec["id"], "initial_config": copy.deepcopy(rec["config"]), "involved_classes": rec["classes"]}
    name = f"pbsdcheck{next(_RUN)}"
    try:
        result = official_multi_turn_checker()(decoded, rec["gold_text"][: upto + 1], entry, rec["category"], name)
    finally:  # the checker keeps its instances in module globals: drop this run's
        for key in [k for k in vars(utils) if k.startswith(name)]:
            del vars(utils)[key]
    return bool(result["valid"])


def sample(per_category, seed=0):
    """(category, index, turn) triples: tasks spread over each category, one turn each."""
    out = []
    for category in MULTI_TURN_CATEGORIES:
        env = full_env(category)
        step = max(1, env.num_tasks // per_category)
        for index in range(0, env.num_tasks, step)[:per_category]:
            env.reset(options={"index": index})
            scored = [k for k, t in enumerate(env.task.gold) if t]
            out.append((category, index, scored[(index + seed) % len(scored)]))
    return out


def run_agreement(triples, kinds=KINDS):
    stats, disagreements, zero_fails = Counter(), [], []
    for category, index, k in triples:
        env = full_env(category)
        env.reset(options={"index": index})
        gold = [list(t) for t in env.task.gold]
        ep = episode_for(env, index, gold)
        ours, official = ep.success, official_valid(env, index, gold)
        stats[(category, "gold")] += 1
        if ours != official:
            disagreements.append((env.task.task_id, "gold", ours, official))
        for kind in kinds:
            env.reset(options={"index": index})
            found = perturb(env, index, kind, k)
            if found is None:
                continue
            turns, f = found
            ep = episode_for(env, index, turns)
            ours, official = ep.success, official_valid(env, index, turns)
            stats[(category, kind)] += 1
            if ours != official:
                disagreements.append((env.task.task_id, kind, ours, official))
            # the perturbed turn itself scores 0, and so it does on the leaderboard (turns before f are gold)
            turn_ok, official_turn = ep.last_step[4]["turn_passed"][f], official_valid(env, index, turns, upto=f)
            if turn_ok is not False or official_turn:
                zero_fails.append((env.task.task_id, kind, f, turn_ok, official_turn))
    return stats, disagreements, zero_fails


def test_perturbed_turns_score_zero_and_agree_with_the_official_checker():
    triples = sample(per_category=50)  # 200 tasks, every category
    stats, disagreements, zero_fails = run_agreement(triples)
    assert len({(c, i) for c, i, _ in triples}) == 200
    assert not disagreements, disagreements[:5]
    assert not zero_fails, zero_fails[:5]
    for category in MULTI_TURN_CATEGORIES:
        assert stats[(category, "gold")] == 50
        assert all(stats[(category, kind)] > 20 for kind in KINDS), stats


@pytest.mark.slow
def test_agreement_on_every_task_and_every_scored_turn():
    triples = []
    for category in MULTI_TURN_CATEGORIES:
        env = full_env(category)
        for index in range(env.num_tasks):
            env.reset(options={"index": index})
            triples += [(category, index, k) for k, t in enumerate(env.task.gold) if t]
    stats, disagreements, zero_fails = run_agreement(triples)
    for category in MULTI_TURN_CATEGORIES:
        print(category, {kind: stats[(category, kind)] for kind in ("gold", *KINDS)})
    print("disagreements", len(disagreements), disagreements[:5], "turns not scored 0", len(zero_fails), zero_fails[:5])
    assert not disagreements and not zero_fails


# ---- through the collector and the CLI ----------------------------------------------------------


@pytest.mark.parametrize("view", ["student", "teacher"])
def test_collector_records_each_turn_note_in_the_teacher_view_only(tmp_path, view):
    from pbsd_agents.invariants import check_jsonl, check_trajectory
    from pbsd_agents.rollout import Collector
    from pbsd_agents.trajectory import save_jsonl
    from tests.support import ScriptedEngine, oracle_script, renderer_for

    kwargs = {"category": "multi_turn_miss_param", "split": "test"}
    r = renderer_for("byte")
    engine = ScriptedEngine(r, oracle_script(ENV_ID, [0, 1], env_kwargs=kwargs))
    collector = Collector(engine, r, progress=False)
    pairs = collector.collect_with_conversations(ENV_ID, [0, 1], view=view, env_kwargs=kwargs,
                                                 max_new_tokens=4096, max_tokens=100_000)
    for traj, conv in pairs:
        assert traj.success and traj.reward == 1.0, traj.outcome
        assert len(traj.turn_privileged) == traj.task_info["num_turns"] - 1
        assert traj.outcome["turns_passed"] == traj.outcome["turns_scored"] == traj.task_info["scored_turns"]
        assert NOTE_ASK in traj.turn_privileged
        assert check_trajectory(traj, r, conversation=conv) == []
    path = tmp_path / "mt.jsonl"
    save_jsonl([t for t, _ in pairs], path)
    report = check_jsonl(path, r, env_kwargs=kwargs)
    assert report.ok and report.render_checked == 2, report.summary()


def test_three_step_pbsd_run_through_the_cli(tiny_model, tmp_path):
    from pbsd_agents.cli import main as cli_main

    out = tmp_path / "run"
    code = cli_main(["train", "--model", tiny_model, "--env", ENV_ID, "--algo", "pbsd", "--steps", "3",
                     "--tasks-per-step", "1", "--eval-tasks", "1", "--pass-k", "1", "--max-new-tokens", "4",
                     "--max-tokens", "8", "--save-every", "3", "--keep-last", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(m["num_pairs"] == 1 for m in metrics)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert evals[-1]["step"] == 3 and "multi_turn_base" in evals[-1]["per_category"]
