"""A reference model of tau-bench's retail env, written from its code for the comparison tests.

It follows ``sierra-research/tau-bench`` (``tau_bench/envs/base.py``: ``Env.step`` and
``calculate_reward``; ``tau_bench/envs/retail/tools/*.py``) on plain dicts changed in place, as
tau-bench does, independently of the kit's copy-on-write implementation: a scripted user who leaves
at the agent's first reply, ``transfer_to_human_agents`` ending the episode, and the reward: the gold
actions (hand-offs skipped) replayed on a fresh database, the two databases compared by hash, and
every output looked for in the agent's replies.

The hash: tau-bench hashes ``str(to_hashable(data))``; :func:`data_hash` hashes the sorted-keys JSON
text instead, which is ~4x faster and makes the same values equal (keys sorted, list order kept, a
number written with its type); ``tests/test_tau_agreement.py`` checks that the two relations agree.

``calculate`` is the one tool not modelled: it never changes the database, and its outputs are
checked against values recorded from Python's ``eval`` (the tests never evaluate model text).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from pbsd_agents.tools.parsers import format_tool_call

TRANSFER = "transfer_to_human_agents"
RESPOND = "respond"
MUTATING = ("cancel_pending_order", "exchange_delivered_order_items", "modify_pending_order_address",
            "modify_pending_order_items", "modify_pending_order_payment", "modify_user_address",
            "return_delivered_order_items")


def to_hashable(item: Any) -> Any:
    """tau-bench's ``to_hashable``: dicts as sorted (key, value) tuples, lists as tuples."""
    if isinstance(item, dict):
        return tuple((k, to_hashable(v)) for k, v in sorted(item.items()))
    if isinstance(item, list):
        return tuple(to_hashable(v) for v in item)
    return item


def tau_hash(data: dict) -> str:
    return hashlib.sha256(str(to_hashable(data)).encode("utf-8")).hexdigest()


def data_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


# ---- the tools, on a plain dict ------------------------------------------------------------------


def _err(text: str) -> str:
    return "Error: " + text


def _user_methods(data, order):
    return data["users"][order["user_id"]]["payment_methods"]


def _items_problem(order, item_ids):
    ids = [it["item_id"] for it in order["items"]]
    for i in item_ids:
        if item_ids.count(i) > ids.count(i):
            return i
    return None


def _swap_check(data, order, item_ids, new_item_ids):
    missing = _items_problem(order, item_ids)
    if missing is not None:
        return _err(f"{missing} not found"), None
    if len(item_ids) != len(new_item_ids):
        return _err("the number of items to be exchanged should match"), None
    diff = 0
    for old, new in zip(item_ids, new_item_ids):
        item = [it for it in order["items"] if it["item_id"] == old][0]
        variants = data["products"][item["product_id"]]["variants"]
        if new not in variants or not variants[new]["available"]:
            return _err(f"new item {new} not found or available"), None
        diff += variants[new]["price"] - item["price"]
    return None, diff


def t_cancel_pending_order(data, order_id, reason):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "pending":
        return _err("non-pending order cannot be cancelled")
    if reason not in ["no longer needed", "ordered by mistake"]:
        return _err("invalid reason")
    refunds = []
    for p in order["payment_history"]:
        refunds.append({"transaction_type": "refund", "amount": p["amount"], "payment_method_id": p["payment_method_id"]})
        if "gift_card" in p["payment_method_id"]:
            m = _user_methods(data, order)[p["payment_method_id"]]
            m["balance"] += p["amount"]
            m["balance"] = round(m["balance"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return json.dumps(order)


def t_exchange_delivered_order_items(data, order_id, item_ids, new_item_ids, payment_method_id):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "delivered":
        return _err("non-delivered order cannot be exchanged")
    problem, diff = _swap_check(data, order, item_ids, new_item_ids)
    if problem:
        return problem
    diff = round(diff, 2)
    methods = _user_methods(data, order)
    if payment_method_id not in methods:
        return _err("payment method not found")
    m = methods[payment_method_id]
    if m["source"] == "gift_card" and m["balance"] < diff:
        return _err("insufficient gift card balance to pay for the price difference")
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return json.dumps(order)


def t_find_user_id_by_email(data, email):
    for uid, u in data["users"].items():
        if u["email"].lower() == email.lower():
            return uid
    return _err("user not found")


def t_find_user_id_by_name_zip(data, first_name, last_name, zip):
    for uid, u in data["users"].items():
        if (u["name"]["first_name"].lower() == first_name.lower() and u["name"]["last_name"].lower() == last_name.lower()
                and u["address"]["zip"] == zip):
            return uid
    return _err("user not found")


def t_get_order_details(data, order_id):
    return json.dumps(data["orders"][order_id]) if order_id in data["orders"] else _err("order not found")


def t_get_product_details(data, product_id):
    return json.dumps(data["products"][product_id]) if product_id in data["products"] else _err("product not found")


def t_get_user_details(data, user_id):
    return json.dumps(data["users"][user_id]) if user_id in data["users"] else _err("user not found")


def t_list_all_product_types(data):
    d = {p["name"]: p["product_id"] for p in data["products"].values()}
    return json.dumps(dict(sorted(d.items())))


def _new_address(address1, address2, city, state, country, zip):
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country, "zip": zip}


def t_modify_pending_order_address(data, order_id, address1, address2, city, state, country, zip):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "pending":
        return _err("non-pending order cannot be modified")
    order["address"] = _new_address(address1, address2, city, state, country, zip)
    return json.dumps(order)


def t_modify_pending_order_items(data, order_id, item_ids, new_item_ids, payment_method_id):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "pending":
        return _err("non-pending order cannot be modified")
    problem, diff = _swap_check(data, order, item_ids, new_item_ids)
    if problem:
        return problem
    methods = _user_methods(data, order)
    if payment_method_id not in methods:
        return _err("payment method not found")
    m = methods[payment_method_id]
    if m["source"] == "gift_card" and m["balance"] < diff:
        return _err("insufficient gift card balance to pay for the new item")
    order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund", "amount": abs(diff),
                                     "payment_method_id": payment_method_id})
    if m["source"] == "gift_card":
        m["balance"] -= diff
        m["balance"] = round(m["balance"], 2)
    for old, new in zip(item_ids, new_item_ids):
        item = [it for it in order["items"] if it["item_id"] == old][0]
        item["item_id"] = new
        item["price"] = data["products"][item["product_id"]]["variants"][new]["price"]
        item["options"] = data["products"][item["product_id"]]["variants"][new]["options"]
    order["status"] = "pending (item modified)"
    return json.dumps(order)


def t_modify_pending_order_payment(data, order_id, payment_method_id):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "pending":
        return _err("non-pending order cannot be modified")
    methods = _user_methods(data, order)
    if payment_method_id not in methods:
        return _err("payment method not found")
    ph = order["payment_history"]
    if len(ph) > 1 or ph[0]["transaction_type"] != "payment":
        return _err("there should be exactly one payment for a pending order")
    if ph[0]["payment_method_id"] == payment_method_id:
        return _err("the new payment method should be different from the current one")
    amount = ph[0]["amount"]
    m = methods[payment_method_id]
    if m["source"] == "gift_card" and m["balance"] < amount:
        return _err("insufficient gift card balance to pay for the order")
    ph.extend([{"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
               {"transaction_type": "refund", "amount": amount, "payment_method_id": ph[0]["payment_method_id"]}])
    if m["source"] == "gift_card":
        m["balance"] -= amount
        m["balance"] = round(m["balance"], 2)
    if "gift_card" in ph[0]["payment_method_id"]:
        old = methods[ph[0]["payment_method_id"]]
        old["balance"] += amount
        old["balance"] = round(old["balance"], 2)
    return json.dumps(order)


def t_modify_user_address(data, user_id, address1, address2, city, state, country, zip):
    if user_id not in data["users"]:
        return _err("user not found")
    data["users"][user_id]["address"] = _new_address(address1, address2, city, state, country, zip)
    return json.dumps(data["users"][user_id])


def t_return_delivered_order_items(data, order_id, item_ids, payment_method_id):
    if order_id not in data["orders"]:
        return _err("order not found")
    order = data["orders"][order_id]
    if order["status"] != "delivered":
        return _err("non-delivered order cannot be returned")
    if payment_method_id not in _user_methods(data, order):
        return _err("payment method not found")
    if "gift_card" not in payment_method_id and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        return _err("payment method should be either the original payment method or a gift card")
    if _items_problem(order, item_ids) is not None:
        return _err("some item not found")
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return json.dumps(order)


def t_think(data, thought):
    return ""


def t_transfer_to_human_agents(data, summary):
    return "Transfer successful"


# Outputs of calculate, recorded once from Python 3.11's eval under tau-bench's rules.
CALCULATE = {"2 ** 3": "8.0", "(1 + 2) * 3 / 4": "2.25", "1/3": "0.33", "1/0": "Error: division by zero",
             "7 // 2": "3.0", "10 - 0.95": "9.05", "0**-1": "Error: 0.0 cannot be raised to a negative power",
             "1 +": "Error: invalid syntax (<string>, line 1)", "1 + x": "Error: invalid characters in expression",
             "()": "Error: float() argument must be a string or a real number, not 'tuple'",
             "(-8) ** 0.5": "Error: float() argument must be a string or a real number, not 'complex'",
             "10 ** 400": "Error: int too large to convert to float", " 2+2": "4.0"}


def t_calculate(data, expression):
    return CALCULATE[expression]


TOOLS = {name[2:]: fn for name, fn in globals().items() if name.startswith("t_")}


# ---- the env: a scripted user who leaves at the first reply ----------------------------------------


def invoke(data: dict, name: str, kwargs: dict) -> str:
    """One tool call as tau-bench's ``Env.step`` makes it (changes ``data`` in place)."""
    if name not in TOOLS:
        return f"Unknown action {name}"
    try:
        return TOOLS[name](data, **kwargs)
    except Exception as e:
        return f"Error: {e}"


@dataclass
class Episode:
    reward: float
    observations: list[str] = field(default_factory=list)  # one per tool call that ran


class Reference:
    """tau-bench's retail env over given tables (loaded fresh for every episode)."""

    def __init__(self, tables_json: dict[str, str], tasks: list[dict]):
        self.tables_json = tables_json
        self.tasks = tasks
        self._gold_hash: dict[int, str] = {}

    def fresh(self) -> dict:
        return {name: json.loads(text) for name, text in self.tables_json.items()}

    def gold_hash(self, index: int) -> str:
        if index not in self._gold_hash:
            data = self.fresh()
            for a in self.tasks[index]["actions"]:
                if a["name"] != TRANSFER:
                    invoke(data, a["name"], a["kwargs"])
            self._gold_hash[index] = data_hash(data)
        return self._gold_hash[index]

    def run(self, index: int, actions: list[tuple[str, Any]]) -> Episode:
        """Play ``actions`` (``(tool, kwargs)`` or ``("respond", text)``) until the episode ends."""
        data, replies, observations = self.fresh(), [], []
        for name, arg in actions:
            if name == RESPOND:
                replies.append(arg)
                break  # the scripted user leaves at the first reply
            observations.append(invoke(data, name, arg))
            if name == TRANSFER:
                break
        reward = 1.0 if data_hash(data) == self.gold_hash(index) else 0.0
        for output in self.tasks[index]["outputs"]:
            if not any(output.lower() in r.lower().replace(",", "") for r in replies):
                reward = 0.0
        return Episode(reward, observations)


def run_env(env, index: int, actions: list[tuple[str, Any]]) -> Episode:
    """Play the same actions in the kit's env: one call a turn, a reply as a turn without a call."""
    env.reset(options={"index": index})
    observations, reward = [], 0.0
    for name, arg in actions:
        turn = arg if name == RESPOND else format_tool_call(name, arg, env.tool_format)
        obs, reward, terminated, truncated, info = env.step(turn)
        if name != RESPOND:
            observations.append(obs[0]["content"] if obs else _last_tool_output(env))
        if terminated or truncated:
            return Episode(reward, observations)
    raise AssertionError("the episode did not end")


def _last_tool_output(env) -> str:
    tools = [m for m in env.messages if m["role"] == "tool"]
    return tools[-1]["content"] if tools else ""


# ---- perturbations -------------------------------------------------------------------------------

KINDS = ("gold", "drop", "change_arg", "swap", "extra", "transfer_mid", "empty_items", "shuffle_new", "noise",
         "duplicate")


def reply_for(task: dict) -> tuple[str, str]:
    return (RESPOND, "Done." + "".join(f" {o}" for o in task["outputs"]))


def perturb(kind: str, task: dict, tables: dict, index: int) -> list[tuple[str, Any]]:
    """Gold or a perturbed action sequence of ``kind`` for ``task`` (deterministic per task)."""
    rng = random.Random(f"{kind}/{index}")
    gold = [(a["name"], copy.deepcopy(a["kwargs"])) for a in task["actions"]]
    plain = [a for a in gold if a[0] != TRANSFER]
    handoff = [a for a in gold if a[0] == TRANSFER][:1]
    end = handoff or [reply_for(task)]
    mut = [i for i, a in enumerate(plain) if a[0] in MUTATING]
    user = tables["users"].get(task.get("user_id") or "", None)
    if kind == "gold":
        return plain + end
    if kind == "drop":
        k = mut[-1] if mut else (len(plain) - 1 if plain else None)
        return (plain[:k] + plain[k + 1:] if k is not None else plain) + end
    if kind == "change_arg":
        if mut:
            k = rng.choice(mut)
            plain[k] = (plain[k][0], _changed(plain[k][1], tables, user, rng))
        return plain + end
    if kind == "swap":
        if len(plain) >= 2:
            k = rng.choice(mut[1:] or list(range(1, len(plain))))
            plain[k - 1], plain[k] = plain[k], plain[k - 1]
        return plain + end
    if kind == "extra":
        return plain + [_extra_call(plain, tables, user, rng)] + end
    if kind == "transfer_mid":
        k = mut[-1] if mut else len(plain)
        return plain[:k] + [(TRANSFER, {"summary": "The user needs help."})] + plain[k:] + [reply_for(task)]
    if kind == "empty_items":
        swaps = [i for i in mut if "new_item_ids" in plain[i][1]]
        if swaps:
            k = rng.choice(swaps)
            plain[k] = (plain[k][0], {**plain[k][1], "item_ids": [], "new_item_ids": []})
        elif user:
            pending = [o for o in user["orders"] if tables["orders"].get(o, {}).get("status") == "pending"]
            if pending:
                method = sorted(user["payment_methods"])[0]
                plain.append(("modify_pending_order_items", {"order_id": rng.choice(pending), "item_ids": [],
                                                             "new_item_ids": [], "payment_method_id": method}))
        return plain + end
    if kind == "shuffle_new":
        swaps = [i for i in mut if "new_item_ids" in plain[i][1]]
        if swaps:
            k = rng.choice(swaps)
            new = list(plain[k][1]["new_item_ids"])
            new.reverse()
            plain[k] = (plain[k][0], {**plain[k][1], "new_item_ids": new})
        return plain + end
    if kind == "noise":
        return _noise(plain, tables, user, rng) + end
    if kind == "duplicate":
        if mut:
            plain.insert(mut[-1] + 1, copy.deepcopy(plain[mut[-1]]))
        return plain + end
    raise ValueError(kind)


def _changed(kwargs: dict, tables: dict, user: dict | None, rng: random.Random) -> dict:
    kwargs = copy.deepcopy(kwargs)
    choices = []
    if "reason" in kwargs:
        choices.append("reason")
    if "payment_method_id" in kwargs and user and len(user["payment_methods"]) > 1:
        choices.append("payment_method_id")
    if len(kwargs.get("item_ids", [])) > 1:
        choices.append("item_ids")
    if "address2" in kwargs:
        choices.append("address2")
    if "new_item_ids" in kwargs:
        choices.append("new_item_ids")
    if not choices:
        return kwargs
    what = rng.choice(choices)
    if what == "reason":
        kwargs["reason"] = "ordered by mistake" if kwargs["reason"] == "no longer needed" else "no longer needed"
    elif what == "payment_method_id":
        kwargs["payment_method_id"] = rng.choice(sorted(set(user["payment_methods"]) - {kwargs["payment_method_id"]}))
    elif what == "item_ids":
        k = rng.randrange(len(kwargs["item_ids"]))
        kwargs["item_ids"].pop(k)
        if "new_item_ids" in kwargs:
            kwargs["new_item_ids"].pop(k)
    elif what == "address2":
        kwargs["address2"] = (kwargs["address2"] + " Apt 2").strip()
    else:  # another variant of the same product for one new item
        order = tables["orders"].get(kwargs.get("order_id"), {})
        k = rng.randrange(len(kwargs["new_item_ids"]))
        item = next((it for it in order.get("items", []) if it["item_id"] == kwargs["item_ids"][k]), None)
        if item is not None:
            variants = sorted(v for v, rec in tables["products"][item["product_id"]]["variants"].items()
                              if rec["available"] and v != kwargs["new_item_ids"][k])
            if variants:
                kwargs["new_item_ids"][k] = rng.choice(variants)
    return kwargs


def _extra_call(plain, tables, user, rng) -> tuple[str, dict]:
    if user:
        pending = sorted(o for o in user["orders"] if tables["orders"].get(o, {}).get("status") == "pending")
        delivered = sorted(o for o in user["orders"] if tables["orders"].get(o, {}).get("status") == "delivered")
        if pending and rng.random() < 0.5:
            return ("cancel_pending_order", {"order_id": rng.choice(pending), "reason": "no longer needed"})
        if delivered:
            order = tables["orders"][rng.choice(delivered)]
            return ("return_delivered_order_items", {"order_id": order["order_id"], "item_ids": [order["items"][0]["item_id"]],
                                                     "payment_method_id": order["payment_history"][0]["payment_method_id"]})
        if pending:
            return ("cancel_pending_order", {"order_id": pending[0], "reason": "ordered by mistake"})
        a = user["address"]
        return ("modify_user_address", {**{k: a[k] for k in ("address1", "address2", "city", "state", "country")},
                                        "zip": "00000"})
    return ("cancel_pending_order", {"order_id": "#W0000000", "reason": "no longer needed"})


def _noise(plain, tables, user, rng) -> list:
    calls = [("calculate", {"expression": rng.choice(sorted(CALCULATE))}), ("think", {"thought": "Let me check."}),
             ("list_all_product_types", {}), ("get_product_details", {"product_id": "0000000000"}),
             ("get_order_details", {"order_id": "W0000000"})]
    if user:
        calls += [("find_user_id_by_email", {"email": user["email"].upper()}),
                  ("find_user_id_by_email", {"email": " " + user["email"]}),
                  ("find_user_id_by_name_zip", {"first_name": user["name"]["first_name"].upper(),
                                                "last_name": user["name"]["last_name"], "zip": user["address"]["zip"]}),
                  ("get_user_details", {"user_id": rng.choice(sorted(tables["users"]))})]
    out = list(plain)
    for call in rng.sample(calls, 3):
        out.insert(rng.randrange(len(out) + 1), call)
    return out
