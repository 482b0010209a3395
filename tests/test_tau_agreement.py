"""pbsd/TauRetail-v0 against a reference model of tau-bench's own semantics (``tests/tau_reference.py``).

Gold and perturbed action sequences of the train and dev tasks are played in both; the rewards must
agree on >= 99 % of them (the tool outputs are compared too). Then one case per difference that
issue 16 listed: a hand-off ends the episode, outputs count only in replies, empty item lists, the
sorting of exchanged items, unrounded amounts, and the tools' words.
"""

from __future__ import annotations

import collections
import json

import gymnasium as gym
import pytest

import pbsd_agents.envs  # noqa: F401  (registers the pbsd/ ids)
from pbsd_agents.envs.tau_retail import RetailDB, load_database
from pbsd_agents.tools.parsers import format_tool_call
from tests.tau_reference import (CALCULATE, KINDS, RESPOND, TRANSFER, Reference, data_hash, invoke, perturb,
                                 run_env, tau_hash)

DEFAULT_STRIDE = 50  # train tasks 0, 50, 100, ... in the default run; every task with -m slow


@pytest.fixture(scope="module")
def tau_dir(shared_data) -> str:
    return str(shared_data("tau_bench", "retail", "tasks_train.json").parent)


@pytest.fixture(scope="module")
def tables_json(tau_dir) -> dict[str, str]:
    out = {}
    for name in ("orders", "products", "users"):
        with open(f"{tau_dir}/{name}.json", encoding="utf-8") as f:
            out[name] = f.read()
    return out


def make(tau_dir, split="train"):
    return gym.make("pbsd/TauRetail-v0", data_dir=tau_dir, split=split).unwrapped


def agreement(tau_dir, tables_json, stride: int) -> tuple[dict, dict]:
    """Per kind: (episodes, reward agreements, reference reward sum, tool outputs, output agreements)."""
    tables = {n: json.loads(t) for n, t in tables_json.items()}
    stats = collections.defaultdict(lambda: [0, 0, 0.0, 0, 0])
    failures = {}
    for split, step in (("train", stride), ("dev", 1)):
        env = make(tau_dir, split)
        ref = Reference(tables_json, env.tasks)
        for i in range(0, env.num_tasks, step):
            for kind in KINDS:
                actions = perturb(kind, env.tasks[i], tables, i)
                want, got = ref.run(i, actions), run_env(env, i, actions)
                s = stats[kind]
                s[0] += 1
                s[1] += want.reward == got.reward
                s[2] += want.reward
                s[3] += len(want.observations)
                s[4] += sum(a == b for a, b in zip(want.observations, got.observations))
                if want.reward != got.reward or want.observations != got.observations:
                    failures.setdefault(kind, (split, i, want, got))
    return dict(stats), failures


def report(stats: dict) -> str:
    lines = [f"{'kind':13s} {'episodes':>8s} {'reward agree':>12s} {'ref. mean':>9s} {'outputs agree':>13s}"]
    for kind, (n, agree, ref_sum, outs, out_agree) in stats.items():
        lines.append(f"{kind:13s} {n:8d} {agree / n:12.3f} {ref_sum / n:9.3f} {out_agree / max(outs, 1):13.3f}")
    n, agree = sum(s[0] for s in stats.values()), sum(s[1] for s in stats.values())
    outs, out_agree = sum(s[3] for s in stats.values()), sum(s[4] for s in stats.values())
    lines.append(f"{'all':13s} {n:8d} {agree / n:12.4f} {'':9s} {out_agree / outs:13.4f}")
    return "\n".join(lines)


def check_agreement(tau_dir, tables_json, stride):
    stats, failures = agreement(tau_dir, tables_json, stride)
    print("\n" + report(stats))
    n, agree = sum(s[0] for s in stats.values()), sum(s[1] for s in stats.values())
    assert len(stats) >= 7  # gold + at least 6 perturbation kinds
    assert agree / n >= 0.99, failures
    outs, out_agree = sum(s[3] for s in stats.values()), sum(s[4] for s in stats.values())
    assert out_agree / outs >= 0.99, failures
    # the perturbations matter: each changing kind scores 0 in tau-bench on some tasks
    for kind in ("drop", "change_arg", "extra", "transfer_mid", "empty_items"):
        assert stats[kind][2] < stats[kind][0], kind


def test_agreement_with_tau_bench_sample(tau_dir, tables_json):
    check_agreement(tau_dir, tables_json, DEFAULT_STRIDE)


@pytest.mark.slow
def test_agreement_with_tau_bench_all_train_and_dev(tau_dir, tables_json):
    check_agreement(tau_dir, tables_json, 1)


def test_reference_hash_is_tau_bench_hash_relation(tables_json):
    """The reference's JSON hash makes two databases equal exactly when tau-bench's str(to_hashable) hash does."""
    base = json.loads(tables_json["users"])
    uid = next(iter(base))
    variants = [base, json.loads(tables_json["users"])]
    reordered = {k: dict(reversed(list(v.items()))) for k, v in base.items()}  # key order: not a difference
    variants.append(reordered)
    as_int = json.loads(tables_json["users"])
    method = next(iter(as_int[uid]["payment_methods"].values()))
    method["x"] = 0  # 0 and 0.0 differ in both
    as_float = json.loads(tables_json["users"])
    next(iter(as_float[uid]["payment_methods"].values()))["x"] = 0.0
    variants += [as_int, as_float]
    swapped = json.loads(tables_json["users"])
    swapped[uid]["orders"] = list(reversed(swapped[uid]["orders"])) + ["#W0"]
    variants.append(swapped)
    for a in variants:
        for b in variants:
            assert (data_hash(a) == data_hash(b)) == (tau_hash(a) == tau_hash(b))


# ---- one case per numbered difference ----------------------------------------------------------------


def play(env, index, actions):
    return run_env(env, index, actions)


def first_task(env, name):
    return next(i for i, t in enumerate(env.tasks) if [a["name"] for a in t["actions"]] == [name] and not env.gold_errors(i))


def test_1_transfer_ends_the_episode(tau_dir, tables_json):
    env = make(tau_dir)
    ref = Reference(tables_json, env.tasks)
    i = first_task(env, "cancel_pending_order")
    gold = [(a["name"], a["kwargs"]) for a in env.tasks[i]["actions"]]
    handoff = (TRANSFER, {"summary": "help"})
    # A hand-off before the right action: the action never runs (0); after it: 1, whatever follows.
    for actions, reward in (([handoff] + gold + [(RESPOND, "ok")], 0.0),
                            (gold + [handoff, ("cancel_pending_order", {"order_id": "#W0000000", "reason": "x"})], 1.0)):
        assert ref.run(i, actions).reward == reward
        assert play(env, i, actions).reward == reward
    # Calls after the hand-off in the same turn do not run.
    env.reset(options={"index": i})
    turn = "\n".join(format_tool_call(n, a, env.tool_format) for n, a in [handoff] + gold)
    obs, reward, terminated, truncated, info = env.step(turn)
    assert terminated and not truncated and obs == [] and reward == 0.0 and info["database_match"] is False
    assert env.messages[-1] == {"role": "tool", "name": TRANSFER, "content": "Transfer successful"}


def test_2_outputs_count_only_in_replies(tau_dir):
    env = make(tau_dir, "dev")
    for turns, reward in (([format_tool_call("think", {"thought": "The total is 1093.34."}, "hermes"), "All done."], 0.0),
                          (["The total is 1,093.34. " + format_tool_call("think", {"thought": "x"}, "hermes"), "Done."], 0.0),
                          (["The total is 1,093.34."], 1.0)):
        env.reset(options={"index": 0})
        env.task.gold["outputs"] = ["1093.34"]
        oracle = env.oracle_actions()[:-1]
        for turn in oracle + turns:
            obs, r, terminated, truncated, info = env.step(turn)
        assert terminated and r == reward, (turns, info)


def test_3_empty_item_lists_change_the_status(tau_dir, tables_json):
    base = load_database(tau_dir)
    tables = {n: json.loads(t) for n, t in tables_json.items()}
    pending = next(o for o in base["orders"].values() if o["status"] == "pending")
    delivered = next(o for o in base["orders"].values() if o["status"] == "delivered")
    for order, name, status in ((pending, "modify_pending_order_items", "pending (item modified)"),
                                (delivered, "exchange_delivered_order_items", "exchange requested")):
        method = sorted(base["users"][order["user_id"]]["payment_methods"])[0]
        kwargs = {"order_id": order["order_id"], "item_ids": [], "new_item_ids": [], "payment_method_id": method}
        db = RetailDB(base)
        out = json.loads(db.invoke(name, **kwargs))
        want = json.loads(invoke(tables, name, kwargs))
        assert out == want and out["status"] == status
        assert json.dumps(db.orders[order["order_id"]], sort_keys=True) == json.dumps(tables["orders"][order["order_id"]], sort_keys=True)
    assert out["exchange_price_difference"] == 0
    method = sorted(base["users"][pending["user_id"]]["payment_methods"])[0]
    modified = json.loads(RetailDB(base).invoke("modify_pending_order_items", order_id=pending["order_id"], item_ids=[],
                                               new_item_ids=[], payment_method_id=method))
    assert modified["payment_history"][-1]["transaction_type"] == "refund" and modified["payment_history"][-1]["amount"] == 0


def test_4_exchange_sorts_new_items_on_their_own(tau_dir):
    base = load_database(tau_dir)
    order = base["orders"]["#W7913362"]  # two items of one product, delivered
    old = [it["item_id"] for it in order["items"] if it["product_id"] == "2524789262"]
    new = ["3928046918", "7251508981"]
    method = order["payment_history"][0]["payment_method_id"]
    one, two = RetailDB(base), RetailDB(base)
    a = json.loads(one.invoke("exchange_delivered_order_items", order_id="#W7913362", item_ids=old, new_item_ids=new,
                              payment_method_id=method))
    b = json.loads(two.invoke("exchange_delivered_order_items", order_id="#W7913362", item_ids=old,
                              new_item_ids=new[::-1], payment_method_id=method))
    assert a["exchange_new_items"] == b["exchange_new_items"] == sorted(new) and one.same_state(two)


def test_5_amounts_are_unrounded_sums(tau_dir, tables_json):
    base = load_database(tau_dir)
    tables = {n: json.loads(t) for n, t in tables_json.items()}
    order = base["orders"]["#W5918442"]
    item = next(it for it in order["items"] if it["item_id"] == "1725100896")
    method = order["payment_history"][0]["payment_method_id"]
    kwargs = {"order_id": "#W5918442", "item_ids": ["1725100896"], "new_item_ids": ["9007697085"],
              "payment_method_id": method}
    db = RetailDB(base)
    out = db.invoke("modify_pending_order_items", **kwargs)
    assert out == invoke(tables, "modify_pending_order_items", kwargs)
    raw = base["products"][item["product_id"]]["variants"]["9007697085"]["price"] - item["price"]
    assert raw != round(raw, 2) and json.loads(out)["payment_history"][-1]["amount"] == abs(raw)
    rounded = RetailDB(base)
    rounded._writable("orders", "#W5918442")["payment_history"].append({**json.loads(out)["payment_history"][-1],
                                                                        "amount": round(abs(raw), 2)})
    assert not db.same_state(rounded)  # 29.3 is not 29.299999999999955 to tau-bench's hash


def test_6_tool_words_and_lookups(tau_dir, tables_json):
    base = load_database(tau_dir)
    tables = {n: json.loads(t) for n, t in tables_json.items()}
    db = RetailDB(base)
    user_id, user = next(iter(base["users"].items()))
    pending = next(o for o in base["orders"].values() if o["status"] == "pending")
    cases = [("get_order_details", {"order_id": "W0000000"}), ("cancel_pending_order", {"order_id": "#W0", "reason": "x"}),
             ("get_user_details", {"user_id": "nobody"}), ("get_product_details", {"product_id": "1"}),
             ("think", {"thought": "hm"}), ("transfer_to_human_agents", {"summary": "s"}),
             ("find_user_id_by_email", {"email": user["email"].upper()}),
             ("find_user_id_by_email", {"email": user["email"] + " "}),
             ("find_user_id_by_name_zip", {"first_name": user["name"]["first_name"].lower(),
                                           "last_name": user["name"]["last_name"].upper(), "zip": user["address"]["zip"]}),
             ("find_user_id_by_name_zip", {"first_name": user["name"]["first_name"], "last_name": user["name"]["last_name"],
                                           "zip": " " + user["address"]["zip"]}),
             ("modify_pending_order_address", {"order_id": pending["order_id"], "address1": "1 Main St", "address2": "",
                                               "city": "Austin", "state": "TX", "country": "USA", "zip": "78701"}),
             ("list_all_product_types", {}), ("no_such_tool", {})]
    outs = [db.invoke(n, **a) for n, a in cases]
    assert outs == [invoke(tables, n, a) for n, a in cases]
    assert outs[:6] == ["Error: order not found", "Error: order not found", "Error: user not found",
                        "Error: product not found", "", "Transfer successful"]
    assert outs[6] == user_id and outs[7] == "Error: user not found"
    assert outs[8] == user_id and outs[9] == "Error: user not found"
    assert '"address": {"address1": "1 Main St", "address2": "", "city": "Austin", "state": "TX", "country": "USA", ' \
           '"zip": "78701"}' in outs[10]
    assert outs[12] == "Unknown action no_such_tool"
    for expression, want in CALCULATE.items():
        assert db.invoke("calculate", expression=expression) == want, expression
    assert db.invoke("calculate", expression="9 ** 9 ** 9") == "Error: int too large to convert to float"  # at once
    # In the env: the same words reach the model, and an unknown tool is tau-bench's "Unknown action".
    env = make(tau_dir, "dev")
    env.reset(options={"index": 0})
    obs, *_ = env.step(format_tool_call("calculate", {"expression": "2 ** 3"}, env.tool_format)
                       + format_tool_call("no_such_tool", {}, env.tool_format))
    assert [m["content"] for m in obs] == ["8.0", "Unknown action no_such_tool"]


def test_schema_check_is_the_one_kept_difference(tau_dir, tables_json):
    """A numeric zip breaks the schema: refused by default (nothing changes); check_arguments=False stores
    it as tau-bench does. Calls that fit the schema are unaffected by the option."""
    tables = {n: json.loads(t) for n, t in tables_json.items()}
    user_id, user = next(iter(tables["users"].items()))
    kwargs = {"user_id": user_id, **{k: user["address"][k] for k in ("address1", "address2", "city", "state", "country")},
              "zip": 12345}
    want = invoke(tables, "modify_user_address", kwargs)
    assert json.loads(want)["address"]["zip"] == 12345
    for check, stored in ((True, False), (False, True)):
        env = gym.make("pbsd/TauRetail-v0", data_dir=tau_dir, split="dev", check_arguments=check).unwrapped
        env.reset(options={"index": 0})
        obs, *_ = env.step(format_tool_call("modify_user_address", kwargs, env.tool_format))
        assert (obs[0]["content"] == want) is stored
        assert (env.db.users[user_id]["address"]["zip"] == 12345) is stored
        assert obs[0]["content"].startswith("error: invalid arguments") is not stored
    with pytest.raises(ValueError, match="check_arguments must be True or False"):
        gym.make("pbsd/TauRetail-v0", data_dir=tau_dir, check_arguments="no")


def test_first_call_only_runs_one_call_a_turn(tau_dir):
    for only, outputs in ((False, ["8.0", "0.33"]), (True, ["8.0"])):
        env = gym.make("pbsd/TauRetail-v0", data_dir=tau_dir, split="dev", first_call_only=only).unwrapped
        env.reset(options={"index": 0})
        obs, *_ = env.step(format_tool_call("calculate", {"expression": "2 ** 3"}, env.tool_format)
                           + format_tool_call("calculate", {"expression": "1/3"}, env.tool_format))
        assert [m["content"] for m in obs] == outputs
    env.reset(options={"index": 0})  # a hand-off that is not the turn's first call does not run, nor end it
    obs, reward, terminated, *_ = env.step(format_tool_call("think", {"thought": "x"}, env.tool_format)
                                           + format_tool_call(TRANSFER, {"summary": "s"}, env.tool_format))
    assert [m["content"] for m in obs] == [""] and not terminated
