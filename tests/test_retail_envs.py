"""Tests of the retail environments: pbsd/Retail-v0 (procedural) and pbsd/TauRetail-v0 (tau-bench data).

The tau-bench data comes from the reference-data folder (the ``shared_data`` fixture) and is never
copied into the repository; the TauRetail tests skip when it is absent.
"""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import pbsd_agents.envs  # noqa: F401  (registers the pbsd/ ids)
from pbsd_agents.envs.retail import SPLITS, TEST_SIZE, RetailEnv, _generate
from pbsd_agents.envs.tau_retail import RetailDB, TauRetailEnv, arithmetic, load_database
from pbsd_agents.tools.parsers import format_tool_call



def run_oracle(env) -> tuple[float, dict]:
    reward, info = 0.0, {}
    for turn in env.oracle_actions():
        _, reward, terminated, truncated, info = env.step(turn)
    assert terminated and not truncated
    return reward, info


def run_turns(env, turns: list[str]) -> tuple[float, dict, list]:
    observations = []
    for turn in turns:
        obs, reward, terminated, truncated, info = env.step(turn)
        observations.append(obs)
        if terminated or truncated:
            return reward, info, observations
    raise AssertionError("episode did not end")


def call(env, name: str, **arguments) -> str:
    return format_tool_call(name, arguments, env.tool_format)


# ---- Retail-v0 ----------------------------------------------------------------------------------


def make_retail(**kwargs) -> RetailEnv:
    return gym.make("pbsd/Retail-v0", **kwargs).unwrapped


def test_retail_check_env_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for split in ("train", "test"):
            check_env(make_retail(split=split))


@pytest.mark.parametrize("fmt", ["hermes", "json", "python"])
def test_retail_oracle_solves_every_test_task(fmt):
    env = make_retail(split="test", tool_format=fmt)
    assert env.num_tasks == TEST_SIZE
    for i in range(TEST_SIZE):
        obs, info = env.reset(options={"index": i})
        assert info["privileged"] not in json.dumps(obs)
        reward, info = run_oracle(env)
        assert reward == 1.0 and info["success"], (i, env.task.messages[1]["content"])


def test_retail_oracle_solves_train_sample():
    env = make_retail(split="train")
    assert env.num_tasks is None
    for seed in range(150):
        env.reset(seed=seed)
        assert run_oracle(env)[0] == 1.0, env.task.task_id


def test_retail_reference_calls_are_dependent():
    """2-5 calls, and every call after the first uses an id that an earlier result showed."""
    env = make_retail(split="test")
    lengths = set()
    for i in range(TEST_SIZE):
        env.reset(options={"index": i})
        calls = env.task.gold["calls"]
        lengths.add(len(calls))
        assert 2 <= len(calls) <= 5
        seen = ""  # every tool result so far: each id a call uses must have been shown, quoted
        for k, ((name, args), turn) in enumerate(zip(calls, env.oracle_actions())):
            ids = [v for key, v in args.items() if key.endswith("_id")] + args.get("item_ids", [])
            assert k == 0 or all(f'"{v}"' in seen for v in ids), (i, name, args)
            obs, *_ = env.step(turn)
            seen += obs[0]["content"]
    assert lengths >= {2, 4, 5}


def test_retail_wrong_actions_score_zero():
    env = make_retail(split="test")
    checked = 0
    for i in range(TEST_SIZE):
        env.reset(options={"index": i})
        calls = env.task.gold["calls"]
        oracle = env.oracle_actions()
        # Skipping the last (changing) call leaves the database unchanged: 0.
        assert run_turns(env, oracle[:-2] + [oracle[-1]])[0] == 0.0
        # Cancelling, returning or exchanging in another order of the same status: 0.
        env.reset(options={"index": i})
        name, args = calls[-1]
        if "order_id" not in args:
            continue
        db = env.world.db
        status = db["orders"][args["order_id"]]["status"]
        others = [o for o, rec in db["orders"].items() if rec["status"] == status and o != args["order_id"]]
        if not others or name == "exchange_item":
            continue
        wrong = {**args, "order_id": others[0]}
        if name == "return_items":
            wrong["item_ids"] = [db["orders"][others[0]]["items"][0]["item_id"]]
        reward, info, _ = run_turns(env, oracle[:-2] + [call(env, name, **wrong), "Done."])
        assert reward == 0.0 and not info["success"]
        checked += 1
    assert checked >= 10


def reset_to_task_ending_with(env, name: str) -> None:
    """Reset ``env`` to the first test task whose last reference call is ``name``."""
    for i in range(TEST_SIZE):
        env.reset(options={"index": i})
        if env.task.gold["calls"][-1][0] == name:
            return
    raise AssertionError(f"no test task ends with {name}")


def test_retail_extra_change_scores_zero():
    env = make_retail(split="test")
    reset_to_task_ending_with(env, "update_address")
    oracle = env.oracle_actions()
    uid = env.task.gold["calls"][-1][1]["user_id"]
    pending = [o for o, r in env.world.db["orders"].items() if r["status"] == "pending"]
    extra = call(env, "cancel_order", order_id=pending[0])
    assert run_turns(env, oracle[:-1] + [extra, oracle[-1]])[0] == 0.0, uid


def test_retail_bad_calls_return_errors_and_episode_goes_on():
    env = make_retail(split="test")
    env.reset(options={"index": 0})
    db = env.world.db
    delivered = next((o for o, r in db["orders"].items() if r["status"] == "delivered"), None)
    pending = next(o for o, r in db["orders"].items() if r["status"] == "pending")
    turns = [
        call(env, "get_order", order_id="O0000"),
        call(env, "cancel_order", order_id=delivered or "O0000"),
        call(env, "return_items", order_id=pending, item_ids=["I0000"]),
        call(env, "get_order", order_id=1042),  # wrong type
        call(env, "no_such_tool"),
        "<tool_call>{not json</tool_call>",
    ]
    for turn in turns:
        obs, reward, terminated, truncated, info = env.step(turn)
        assert not terminated and not truncated and reward == 0.0
        assert obs and obs[0]["content"].startswith("error"), obs
    before = json.dumps(env.task.gold["db"], sort_keys=True)
    assert json.dumps(env.world.db, sort_keys=True) == before  # failed calls change nothing
    # ...and the task can still be solved in the same episode.
    assert run_turns(env, env.oracle_actions())[0] == 1.0


def test_retail_exchange_rules():
    env = make_retail(split="test")
    reset_to_task_ending_with(env, "exchange_item")
    args = env.task.gold["calls"][-1][1]
    world = env.world
    item = next(it for it in world.db["orders"][args["order_id"]]["items"] if it["item_id"] == args["item_id"])
    other_product = next(p for p in world.db["products"] if p != item["product_id"])
    other_item = next(iter(world.db["products"][other_product]["variants"]))
    assert world.exchange_item(args["order_id"], args["item_id"], other_item).startswith("error")
    assert world.exchange_item(args["order_id"], args["item_id"], args["item_id"]).startswith("error")
    variants = world.db["products"][item["product_id"]]["variants"]
    variants[args["new_item_id"]]["stock"] = 0
    assert "out of stock" in world.exchange_item(**args)


def test_retail_deterministic():
    a, b = make_retail(split="train"), make_retail(split="train")
    for seed in (0, 1, 123):
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        assert oa == ob and ia == ib and a.task.gold == b.task.gold
    assert make_retail(split="test").reset(options={"index": 7}) == make_retail(split="test").reset(options={"index": 7})
    tasks = {make_retail().reset(seed=s)[0][1]["content"] for s in range(20)}
    assert len(tasks) == 20


def test_retail_train_and_test_disjoint():
    test = SPLITS.test_keys()
    assert len(test) == TEST_SIZE
    env = make_retail(split="train")
    for i in range(300):
        env.reset(options={"index": i})
        calls = env.task.gold["calls"]
        assert SPLITS.fingerprint((None, env.task.messages[1]["content"], calls)) not in test
    # The split name salts the generator: index i of train is not index i of test.
    assert _generate("train", 0)[1] != _generate("test", 0)[1]


def test_retail_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'validation'"):
        make_retail(split="validation")
    env = make_retail(split="test")
    with pytest.raises(ValueError, match="100"):
        env.reset(options={"index": 100})


def test_retail_truncates_at_max_turns():
    env = make_retail(split="test", max_turns=2)
    env.reset(options={"index": 0})
    oracle = env.oracle_actions()
    env.step(oracle[0])
    _, reward, terminated, truncated, info = env.step(oracle[1])
    assert truncated and not terminated and reward == 0.0 and info["success"] is False


# ---- TauRetail-v0 -------------------------------------------------------------------------------


@pytest.fixture
def tau_dir(shared_data) -> str:
    return str(shared_data("tau_bench", "retail", "tasks_train.json").parent)


@pytest.fixture
def make_tau(tau_dir):
    def make(split="train", **kwargs) -> TauRetailEnv:
        return gym.make("pbsd/TauRetail-v0", data_dir=tau_dir, split=split, **kwargs).unwrapped

    return make


def test_tau_check_env_no_warnings(make_tau):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make_tau("dev"))


@pytest.mark.parametrize("split", ["train", "dev"])
def test_tau_oracle_solves_every_task(split, make_tau):
    env = make_tau(split)
    for i in range(env.num_tasks):
        obs, info = env.reset(options={"index": i})
        assert info["privileged"] not in json.dumps(obs)
        assert run_oracle(env)[0] == 1.0, i


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "python"])
def test_tau_oracle_solves_every_train_task_in_other_formats(fmt, make_tau):
    env = make_tau("train", tool_format=fmt)
    for i in range(env.num_tasks):
        env.reset(options={"index": i})
        assert run_oracle(env)[0] == 1.0, i


def test_tau_known_gold_failures_are_gift_card_shortfalls(make_tau):
    """Some synthetic train tasks pay with a gift card that lacks the balance (the policy forbids it)."""
    env = make_tau("train")
    failing = {i: env.gold_errors(i) for i in range(env.num_tasks)}
    failing = {i: e for i, e in failing.items() if e}
    assert all("gift card" in msg for errs in failing.values() for msg in errs), failing
    assert len(failing) <= 25
    dev = make_tau("dev")
    assert not any(dev.gold_errors(i) for i in range(dev.num_tasks))


def _first_task(env, name: str, where=lambda i: True) -> int:
    """The first train task whose gold actions include ``name`` and all succeed."""
    for i, t in enumerate(env.tasks):
        if any(a["name"] == name for a in t["actions"]) and not env.gold_errors(i) and where(i):
            return i
    raise AssertionError(f"no task with a {name} action")


def test_tau_wrong_actions_score_zero(make_tau, tau_dir):
    env = make_tau("train")
    for name in ("cancel_pending_order", "return_delivered_order_items", "modify_pending_order_items",
                 "exchange_delivered_order_items", "modify_pending_order_address", "modify_pending_order_payment"):
        i = _first_task(env, name)
        env.reset(options={"index": i})
        k = [a["name"] for a in env.tasks[i]["actions"]].index(name)
        oracle = env.oracle_actions()
        reward, info, _ = run_turns(env, oracle[:k] + oracle[k + 1:])  # that change is skipped
        assert reward == 0.0 and info["database_match"] is False, (name, i)
    # A different item returned: 0.
    i = _first_task(env, "return_delivered_order_items",
                    lambda i: len(env.tasks[i]["actions"]) == 1 and len(load_database(tau_dir)["orders"][env.tasks[i]["actions"][-1]["kwargs"]["order_id"]]["items"])
                    > len(env.tasks[i]["actions"][-1]["kwargs"]["item_ids"]))
    env.reset(options={"index": i})
    kwargs = dict(env.tasks[i]["actions"][-1]["kwargs"])
    order = env.base_db["orders"][kwargs["order_id"]]
    kwargs["item_ids"] = [next(it["item_id"] for it in order["items"] if it["item_id"] not in kwargs["item_ids"])]
    oracle = env.oracle_actions()
    reward, _, _ = run_turns(env, oracle[:-2] + [call(env, "return_delivered_order_items", **kwargs), oracle[-1]])
    assert reward == 0.0
    # A different cancellation reason: 0 (the reason is recorded).
    i = _first_task(env, "cancel_pending_order")
    env.reset(options={"index": i})
    kwargs = dict(env.tasks[i]["actions"][-1]["kwargs"])
    kwargs["reason"] = "ordered by mistake" if kwargs["reason"] == "no longer needed" else "no longer needed"
    oracle = env.oracle_actions()
    assert run_turns(env, oracle[:-2] + [call(env, "cancel_pending_order", **kwargs), oracle[-1]])[0] == 0.0


def test_tau_outputs_must_be_said(make_tau):
    env = make_tau("dev")
    env.reset(options={"index": 0})
    env.task.gold["outputs"] = ["1093.34"]
    oracle = env.oracle_actions()
    reward, info, _ = run_turns(env, oracle[:-1] + ["All done."])
    assert reward == 0.0 and info["database_match"] and info["missing_outputs"] == ["1093.34"]
    env.reset(options={"index": 0})
    env.task.gold["outputs"] = ["1093.34"]
    assert run_turns(env, oracle[:-1] + ["The total is 1,093.34."])[0] == 1.0


def test_tau_bad_calls_return_errors_and_episode_goes_on(make_tau):
    env = make_tau("dev")
    env.reset(options={"index": 0})
    base = env.base_db
    delivered = next(o for o, r in base["orders"].items() if r["status"] == "delivered")
    turns = [
        call(env, "get_order_details", order_id="W0000000"),
        call(env, "cancel_pending_order", order_id=delivered, reason="no longer needed"),
        call(env, "cancel_pending_order", order_id="#W5442520", reason="too expensive"),
        call(env, "return_delivered_order_items", order_id=delivered, item_ids=["0"], payment_method_id="x"),
        call(env, "find_user_id_by_email", email="nobody@example.com"),
        call(env, "get_product_details", product_id="nope"),
        call(env, "calculate", expression="__import__('os').system('true')"),
        call(env, "calculate", expression="1/0"),
        call(env, "get_user_details"),
    ]
    for turn in turns:
        obs, reward, terminated, truncated, info = env.step(turn)
        assert not terminated and not truncated
        assert obs[0]["content"].lower().startswith("error"), (turn, obs)
    assert env.db.state() == RetailDB(base).state()
    obs, *_ = env.step(call(env, "calculate", expression="(1 + 2) * 3 / 4"))
    assert obs[0]["content"] == "2.25"
    assert run_turns(env, env.oracle_actions())[0] == 1.0


def test_tau_episodes_do_not_leak_state(make_tau):
    env = make_tau("train")
    i = _first_task(env, "cancel_pending_order")
    order_id = env.tasks[i]["actions"][-1]["kwargs"]["order_id"]
    env.reset(options={"index": i})
    run_oracle(env)
    assert env.db.orders[order_id]["status"] == "cancelled"
    assert env.base_db["orders"][order_id]["status"] == "pending"
    env.reset(options={"index": i})
    assert env.db.orders[order_id]["status"] == "pending"
    assert run_oracle(env)[0] == 1.0


def test_tau_gift_card_and_payment_bookkeeping(tau_dir):
    base = load_database(tau_dir)
    db = RetailDB(base)
    # A pending order paid once, whose user has a gift card with room to pay it.
    for oid, order in base["orders"].items():
        user = base["users"][order["user_id"]]
        cards = [m for m in user["payment_methods"].values() if m["source"] == "gift_card"]
        pays = [e for e in order["payment_history"] if e["transaction_type"] == "payment"]
        if order["status"] == "pending" and cards and len(pays) == 1 and cards[0]["balance"] >= pays[0]["amount"] \
                and pays[0]["payment_method_id"] != cards[0]["id"]:
            break
    card, amount = cards[0], pays[0]["amount"]
    out = json.loads(db.modify_pending_order_payment(oid, card["id"]))
    assert out["payment_history"][-2:][0]["payment_method_id"] == card["id"]
    assert db.users[order["user_id"]]["payment_methods"][card["id"]]["balance"] == round(card["balance"] - amount, 2)
    assert base["users"][order["user_id"]]["payment_methods"][card["id"]]["balance"] == card["balance"]
    assert db.modify_pending_order_payment(oid, card["id"]).startswith("Error")  # now two payments
    db.cancel_pending_order(oid, "ordered by mistake")
    assert db.users[order["user_id"]]["payment_methods"][card["id"]]["balance"] == card["balance"]


def test_arithmetic():
    assert arithmetic("2 + 2") == 4 and arithmetic("-(3 - 5) * 1.5") == 3.0 and arithmetic("2 ** 10") == 1024
    for bad in ("1 +", "", "(" * 300 + "1" + ")" * 300):
        with pytest.raises(SyntaxError):
            arithmetic(bad)
    assert arithmetic("1+" * 900 + "1") == 901  # evaluated without recursion (the parser has its own limit)
    with pytest.raises(OverflowError):
        arithmetic("9 ** 9 ** 9")  # refused at once, not computed


def test_tau_constructor_errors(tmp_path):
    with pytest.raises(ValueError, match="data_dir="):
        gym.make("pbsd/TauRetail-v0")
    (tmp_path / "tasks_train.json").write_text("[]")
    with pytest.raises(ValueError, match="neither tau-bench's layout"):
        gym.make("pbsd/TauRetail-v0", data_dir=str(tmp_path), split="dev")
    for name in ("orders.json", "products.json", "users.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match=r"lacks \['policy_wiki\.md'\]"):
        gym.make("pbsd/TauRetail-v0", data_dir=str(tmp_path), split="train")
    (tmp_path / "policy_wiki.md").write_text("policy")
    with pytest.raises(ValueError, match=r"tasks_dev\.json.*\['train'\]"):
        gym.make("pbsd/TauRetail-v0", data_dir=str(tmp_path), split="dev")
    with pytest.raises(ValueError, match="'validation'"):
        gym.make("pbsd/TauRetail-v0", data_dir=str(tmp_path), split="validation")
    assert TauRetailEnv.splits == ("train", "dev", "test")


def test_tau_same_state_agrees_with_full_comparison(make_tau):
    env = make_tau("train")
    for i in range(0, env.num_tasks, 25):
        env.reset(options={"index": i})
        oracle = env.oracle_actions()
        run_turns(env, oracle[1:])  # the first gold action skipped
        gold = env.gold_db(i)
        assert env.db.same_state(gold) == (env.db.state() == gold.state())
        env.reset(options={"index": i})
        run_oracle(env)
        assert env.db.same_state(gold) and env.db.state() == gold.state()
