"""tau-bench retail: the real tasks and database, with this project's own implementation of every tool.

``data_dir`` holds ``users.json``, ``orders.json``, ``products.json``, ``tools_schema.json``,
``policy_wiki.md`` and one ``tasks_<split>.json`` per split (a list of ``{"instruction", "actions":
[{"name", "kwargs"}], "outputs": [...]}``). The tools' names, descriptions and argument schemas come
from ``tools_schema.json``; what each one does is implemented here, from those descriptions and the
policy, on a per-episode copy of the database.

There is no user simulator: the task's ``instruction`` is the user's opening message and the episode
ends at the first assistant turn without a tool call. Reward, as in tau-bench: the gold ``actions``
are replayed on a fresh copy of the database, and the episode scores 1 when the agent's final
database equals that one and every string of ``outputs`` occurs in the agent's turns.

The database is read once per process and directory and shared read-only; an episode copies a
record only when it changes it (copy-on-write), so a reset costs microseconds, not a 2.6 MB parse.
"""

from __future__ import annotations

import ast
import copy
import functools
import operator
import os
from collections import Counter
from typing import Any

from pbsd_agents.tools.base import Tool
from pbsd_agents.tools.parsers import format_tool_call

from .base import ChatToolEnv, Task, Transcript
from .data import DataArg, read_json

DB_FILES = ("users.json", "orders.json", "products.json")
NO_USER_NOTE = (
    "\n\n## This conversation\n\n"
    "- The user cannot reply: their first message is their whole request, and it counts as their "
    "explicit confirmation of the actions it asks for. Make one tool call per turn. Your first reply "
    "without a tool call ends the conversation, so make every change first."
)


def _round2(x: float) -> float:
    return round(x + 0.0, 2)


_DATA = DataArg("TauRetailEnv", "data_dir", f"a folder with {', '.join(DB_FILES)}, tools_schema.json, policy_wiki.md "
                "and tasks_<split>.json (tau-bench retail)")


def load_database(data_dir: str) -> dict[str, dict]:
    """The shared, read-only tables ``users``, ``orders``, ``products`` of ``data_dir`` (cached)."""
    return {name.split(".")[0]: read_json(os.path.join(data_dir, name)) for name in DB_FILES}


# ---- the database and its tools --------------------------------------------------------------


class RetailDB:
    """One episode's tau-bench retail database with the tools as methods.

    Copy-on-write over shared tables: a record is deep-copied the first time a tool changes it,
    so the shared tables are never modified. Every tool returns a ``str`` or a JSON-able value;
    a failed call returns a string starting with ``error:``, it never raises.

    Example:
        >>> base = {"users": {"ann_1": {"name": {"first_name": "Ann", "last_name": "Li"},
        ...                   "address": {"zip": "10001"}, "email": "ann@x.com",
        ...                   "payment_methods": {"paypal_1": {"source": "paypal", "id": "paypal_1"}},
        ...                   "orders": ["#W1"]}},
        ...         "orders": {"#W1": {"order_id": "#W1", "user_id": "ann_1", "status": "pending", "items": [],
        ...                    "payment_history": [{"transaction_type": "payment", "amount": 5.0,
        ...                                         "payment_method_id": "paypal_1"}]}},
        ...         "products": {}}
        >>> db = RetailDB(base)
        >>> db.find_user_id_by_email("ANN@x.com")
        'ann_1'
        >>> db.cancel_pending_order("#W1", "no longer needed")["status"]
        'cancelled'
        >>> db.cancel_pending_order("#W1", "no longer needed")
        "error: order #W1 is 'cancelled'; only a 'pending' order can be cancelled"
        >>> base["orders"]["#W1"]["status"]  # the shared table is untouched
        'pending'
    """

    def __init__(self, base: dict[str, dict]):
        self._base = base
        self.users = dict(base["users"])
        self.orders = dict(base["orders"])
        self.products = base["products"]  # no tool changes products
        self._owned: set[tuple[str, str]] = set()

    def state(self) -> dict:
        return {"users": self.users, "orders": self.orders, "products": self.products}

    def same_state(self, other: RetailDB) -> bool:
        """Whether both databases hold the same data (both must share the same base tables)."""
        if other._base is not self._base:
            return self.state() == other.state()
        # Records neither side copied are the shared base objects: only the copied ones can differ.
        return all(getattr(self, t)[k] == getattr(other, t)[k] for t, k in self._owned | other._owned)

    def _writable(self, table: str, key: str) -> dict:
        records = getattr(self, table)
        if (table, key) not in self._owned:
            records[key] = copy.deepcopy(records[key])
            self._owned.add((table, key))
        return records[key]

    # -- lookups (read-only) --

    def find_user_id_by_email(self, email: str) -> str:
        wanted = email.strip().lower()
        for user_id, user in self.users.items():
            if user["email"].lower() == wanted:
                return user_id
        return f"error: no user with email {email!r}"

    def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
        key = (first_name.strip().lower(), last_name.strip().lower(), zip.strip())
        for user_id, user in self.users.items():
            name = user["name"]
            if (name["first_name"].lower(), name["last_name"].lower(), user["address"]["zip"]) == key:
                return user_id
        return f"error: no user named {first_name} {last_name} with zip code {zip!r}"

    def get_user_details(self, user_id: str):
        return self.users.get(user_id) or f"error: no user with id {user_id!r}"

    def get_order_details(self, order_id: str):
        return self.orders.get(order_id) or _no_order(order_id)

    def get_product_details(self, product_id: str):
        return self.products.get(product_id) or f"error: no product with id {product_id!r} (item ids are not product ids)"

    def list_all_product_types(self):
        return dict(sorted((p["name"], pid) for pid, p in self.products.items()))

    def calculate(self, expression: str) -> str:
        try:
            value = safe_arithmetic(expression)
        except ValueError as exc:
            return f"error: {exc}"
        return str(_round2(value))

    def think(self, thought: str) -> str:
        return "(thought noted)"

    def transfer_to_human_agents(self, summary: str) -> str:
        return "Transfer successful"

    # -- changes --

    def cancel_pending_order(self, order_id: str, reason: str):
        order, problem = self._order(order_id, "pending", "be cancelled")
        if problem:
            return problem
        if reason not in ("no longer needed", "ordered by mistake"):
            return f"error: reason must be 'no longer needed' or 'ordered by mistake', got {reason!r}"
        order = self._writable("orders", order_id)
        refunds = []
        for entry in order["payment_history"]:
            if entry["transaction_type"] == "payment":
                refunds.append({"transaction_type": "refund", "amount": entry["amount"],
                                "payment_method_id": entry["payment_method_id"]})
                self._adjust_gift_card(order["user_id"], entry["payment_method_id"], entry["amount"])
        order["payment_history"].extend(refunds)
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        return order

    def modify_pending_order_address(self, order_id, address1, address2, city, state, country, zip):
        order, problem = self._order(order_id, "pending", "be modified")
        if problem:
            return problem
        order = self._writable("orders", order_id)
        order["address"] = _address(address1, address2, city, state, country, zip)
        return order

    def modify_user_address(self, user_id, address1, address2, city, state, country, zip):
        if user_id not in self.users:
            return f"error: no user with id {user_id!r}"
        user = self._writable("users", user_id)
        user["address"] = _address(address1, address2, city, state, country, zip)
        return user

    def modify_pending_order_payment(self, order_id: str, payment_method_id: str):
        order, problem = self._order(order_id, "pending", "be modified")
        if problem:
            return problem
        user = self.users[order["user_id"]]
        if payment_method_id not in user["payment_methods"]:
            return _no_method(payment_method_id, user)
        payments = [e for e in order["payment_history"] if e["transaction_type"] == "payment"]
        if len(payments) != 1:
            return f"error: order {order_id} has {len(payments)} payments; only a single payment can be changed"
        old, amount = payments[0]["payment_method_id"], payments[0]["amount"]
        if payment_method_id == old:
            return f"error: {payment_method_id} already pays for order {order_id}; choose a different method"
        problem = self._check_gift_card(user, payment_method_id, amount)
        if problem:
            return problem
        order = self._writable("orders", order_id)
        order["payment_history"].extend([
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old},
        ])
        self._adjust_gift_card(order["user_id"], payment_method_id, -amount)
        self._adjust_gift_card(order["user_id"], old, amount)
        return order

    def modify_pending_order_items(self, order_id, item_ids, new_item_ids, payment_method_id):
        return self._swap_items(order_id, item_ids, new_item_ids, payment_method_id, exchange=False)

    def exchange_delivered_order_items(self, order_id, item_ids, new_item_ids, payment_method_id):
        return self._swap_items(order_id, item_ids, new_item_ids, payment_method_id, exchange=True)

    def return_delivered_order_items(self, order_id: str, item_ids: list, payment_method_id: str):
        order, problem = self._order(order_id, "delivered", "be returned")
        if problem:
            return problem
        user = self.users[order["user_id"]]
        method = user["payment_methods"].get(payment_method_id)
        original = {e["payment_method_id"] for e in order["payment_history"] if e["transaction_type"] == "payment"}
        if method is None:
            return _no_method(payment_method_id, user)
        if payment_method_id not in original and method["source"] != "gift_card":
            return (f"error: a refund goes to the original payment method ({', '.join(sorted(original))}) "
                    f"or a gift card, not {payment_method_id}")
        problem = _missing_items(order, item_ids)
        if problem:
            return problem
        order = self._writable("orders", order_id)
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return order

    # -- helpers --

    def _swap_items(self, order_id, item_ids, new_item_ids, payment_method_id, exchange: bool):
        needed, what = ("delivered", "exchanged") if exchange else ("pending", "modified")
        order, problem = self._order(order_id, needed, f"have items {what}")
        if problem:
            return problem
        if len(item_ids) != len(new_item_ids):
            return f"error: item_ids has {len(item_ids)} ids but new_item_ids has {len(new_item_ids)}; pair them one to one"
        if not item_ids:
            return "error: item_ids is empty"
        problem = _missing_items(order, item_ids)
        if problem:
            return problem
        by_id = {item["item_id"]: item for item in order["items"]}
        diff = 0.0
        for old_id, new_id in zip(item_ids, new_item_ids):
            product = self.products[by_id[old_id]["product_id"]]
            variant = product["variants"].get(new_id)
            if variant is None:
                return f"error: item {new_id} is not a variant of {product['name']} (product {product['product_id']})"
            if not variant["available"]:
                return f"error: item {new_id} ({product['name']}) is not available"
            diff += variant["price"] - by_id[old_id]["price"]
        diff = _round2(diff)
        user = self.users[order["user_id"]]
        if payment_method_id not in user["payment_methods"]:
            return _no_method(payment_method_id, user)
        problem = self._check_gift_card(user, payment_method_id, diff)
        if problem:
            return problem
        order = self._writable("orders", order_id)
        if exchange:
            order["status"] = "exchange requested"
            # Sorted pairs: the same exchange listed in another order gives the same record.
            pairs = sorted(zip(item_ids, new_item_ids))
            order["exchange_items"] = [old for old, _ in pairs]
            order["exchange_new_items"] = [new for _, new in pairs]
            order["exchange_payment_method_id"] = payment_method_id
            order["exchange_price_difference"] = diff
            return order
        # A pending order changes now: each listed item (duplicates count) becomes its new variant.
        todo = sorted(zip(item_ids, new_item_ids))  # sorted: the result must not depend on the listing order
        for item in order["items"]:
            for k, (old_id, new_id) in enumerate(todo):
                if item["item_id"] == old_id:
                    variant = self.products[item["product_id"]]["variants"][new_id]
                    item.update(item_id=new_id, price=variant["price"], options=copy.deepcopy(variant["options"]))
                    del todo[k]
                    break
        if diff:
            order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund",
                                             "amount": abs(diff), "payment_method_id": payment_method_id})
            self._adjust_gift_card(order["user_id"], payment_method_id, -diff)
        order["status"] = "pending (item modified)"
        return order

    def _order(self, order_id: str, status: str, action: str) -> tuple[dict | None, str | None]:
        """The order and None, or None and the error for a missing order or one not in ``status``."""
        order = self.orders.get(order_id)
        if order is None:
            return None, _no_order(order_id)
        if order["status"] != status:
            return None, f"error: order {order_id} is {order['status']!r}; only a {status!r} order can {action}"
        return order, None

    def _check_gift_card(self, user: dict, method_id: str, amount: float) -> str | None:
        method = user["payment_methods"][method_id]
        if method["source"] == "gift_card" and amount > 0 and method["balance"] < amount:
            return f"error: gift card {method_id} has a balance of {method['balance']}, less than {amount}"
        return None

    def _adjust_gift_card(self, user_id: str, method_id: str, amount: float) -> None:
        method = self.users[user_id]["payment_methods"].get(method_id)
        if method is None or method["source"] != "gift_card" or not amount:
            return
        method = self._writable("users", user_id)["payment_methods"][method_id]
        method["balance"] = _round2(method["balance"] + amount)


def _no_order(order_id: str) -> str:
    hint = "" if str(order_id).startswith("#") else " (order ids start with '#', e.g. '#W0000000')"
    return f"error: no order with id {order_id!r}{hint}"


def _no_method(method_id: str, user: dict) -> str:
    return f"error: {method_id!r} is not a payment method of this user; theirs: {', '.join(user['payment_methods'])}"


def _missing_items(order: dict, item_ids: list) -> str | None:
    have = Counter(item["item_id"] for item in order["items"])
    for item_id, n in Counter(item_ids).items():
        if have[item_id] < n:
            return f"error: order {order['order_id']} has {have[item_id]} of item {item_id}, not {n}"
    return None


def _address(address1, address2, city, state, country, zip) -> dict:
    return {"address1": address1, "address2": address2, "city": city, "country": country, "state": state, "zip": zip}


# ---- calculator: arithmetic only, read with ast, never evaluated ---------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def safe_arithmetic(expression: str) -> float:
    """Value of ``expression`` made of numbers, ``+ - * /`` and parentheses; ValueError otherwise.

    Example:
        >>> safe_arithmetic("(2 + 3) * 4 / 8")
        2.5
        >>> safe_arithmetic("__import__('os')")
        Traceback (most recent call last):
        ...
        ValueError: only numbers, + - * / and parentheses are allowed
    """
    if len(expression) > 500:
        raise ValueError(f"expression too long ({len(expression)} chars, limit 500)")
    if set(expression) - set("0123456789.+-*/() \t"):
        raise ValueError("only numbers, + - * / and parentheses are allowed")
    try:
        tree = ast.parse(expression.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"cannot read {expression!r} as arithmetic") from None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        raise ValueError("only numbers, + - * / and parentheses are allowed")

    try:
        return float(value(tree))
    except RecursionError:
        raise ValueError("expression nested too deeply") from None


# ---- the environment ---------------------------------------------------------------------------


class TauRetailEnv(ChatToolEnv):
    """tau-bench retail tasks on the real database (``pbsd/TauRetail-v0``).

    Args:
        data_dir: folder with the database, ``tools_schema.json``, ``policy_wiki.md`` and
            ``tasks_<split>.json`` files (required).
        split: ``"train"``, ``"dev"`` or ``"test"``; tasks come from ``tasks_<split>.json``.
        max_turns: assistant turns before truncation (default 30: look-ups take several turns).
        Other arguments as in :class:`ChatToolEnv`.

    Example:
        >>> import gymnasium as gym
        >>> import pbsd_agents.envs
        >>> gym.make("pbsd/TauRetail-v0")
        Traceback (most recent call last):
        ...
        ValueError: TauRetailEnv needs data_dir=: a folder with users.json, ...
        >>> env = gym.make("pbsd/TauRetail-v0", data_dir="tau_bench/retail", split="dev").unwrapped  # doctest: +SKIP
        >>> obs, info = env.reset(options={"index": 0})  # doctest: +SKIP
        >>> for turn in env.oracle_actions():  # doctest: +SKIP
        ...     obs, reward, terminated, truncated, info = env.step(turn)
        >>> reward, info["success"]  # doctest: +SKIP
        (1.0, True)
    """

    splits = ("train", "dev", "test")

    def __init__(self, data_dir: str | None = None, split: str = "train", max_turns: int = 30, **kwargs: Any):
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        if data_dir is None:
            raise _DATA.missing()
        if not os.path.isdir(data_dir):
            raise _DATA.error(data_dir, "is not a folder")
        self.data_dir = data_dir
        tasks_path = os.path.join(data_dir, f"tasks_{split}.json")
        if not os.path.isfile(tasks_path):
            present = sorted(f for f in os.listdir(data_dir) if f.startswith("tasks_") and f.endswith(".json"))
            raise _DATA.error(data_dir, f"has no tasks file for split {split!r} (looked for tasks_{split}.json; "
                                        f"task files present: {present or 'none'})")
        missing = [f for f in (*DB_FILES, "tools_schema.json", "policy_wiki.md") if not os.path.isfile(os.path.join(data_dir, f))]
        if missing:
            raise _DATA.error(data_dir, f"lacks {missing}")
        self.tasks: list[dict] = read_json(tasks_path)
        with open(os.path.join(data_dir, "policy_wiki.md"), encoding="utf-8") as f:
            self.system_prompt = f.read().rstrip() + NO_USER_NOTE
        self.base_db = load_database(data_dir)
        self.num_tasks = len(self.tasks)
        self.db: RetailDB | None = None
        self.tools = self._make_tools(os.path.join(data_dir, "tools_schema.json"))

    def _make_tools(self, schema_path: str) -> list[Tool]:
        tools = []
        for entry in read_json(schema_path):
            spec = entry.get("function", entry)
            name = spec["name"]
            if name.startswith("_") or not callable(getattr(RetailDB, name, None)):
                known = sorted(n for n in vars(RetailDB) if not n.startswith("_") and n != "state")
                raise ValueError(f"tools_schema.json names tool {name!r}, which has no implementation; known: {known}")
            # The callable reads the env's current episode database, so one set of tools serves all episodes.
            tools.append(Tool(name, spec.get("description", ""), spec["parameters"], functools.partial(self._run_tool, name)))
        return tools

    def _run_tool(self, name: str, **arguments: Any) -> Any:
        if self.db is None:
            return "error: no episode is running"
        return getattr(self.db, name)(**arguments)

    def gold_db(self, index: int) -> RetailDB:
        """A fresh database with task ``index``'s gold actions replayed on it (failing ones change nothing)."""
        db = RetailDB(self.base_db)
        for action in self.tasks[index]["actions"]:
            getattr(db, action["name"])(**action["kwargs"])
        return db

    def gold_errors(self, index: int) -> list[str]:
        """The error strings the gold actions of task ``index`` produce under these tools (data checks)."""
        db, errors = RetailDB(self.base_db), []
        for action in self.tasks[index]["actions"]:
            out = getattr(db, action["name"])(**action["kwargs"])
            if isinstance(out, str) and out.startswith("error:"):
                errors.append(f"{action['name']}: {out}")
        return errors

    def make_task(self, index: int) -> Task:
        raw = self.tasks[index]
        calls = [(a["name"], a["kwargs"]) for a in raw["actions"]]
        outputs = list(raw.get("outputs") or [])
        final = "Your request has been handled."
        if outputs:
            final += " " + ", ".join(str(o) for o in outputs)
        oracle = [format_tool_call(n, a, self.tool_format) for n, a in calls] + [final]
        return Task(
            task_id=f"tau-retail-{self.split}-{index}",
            messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": raw["instruction"]}],
            privileged="\n".join(oracle[:-1]) or "(no database change is needed)",
            oracle=oracle,
            tools=self.tools,
            gold={"index": index, "outputs": outputs},  # the gold database is replayed from the task's actions
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self.db = RetailDB(self.base_db)
        return obs, info

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        state_ok = self.db.same_state(self.gold_db(self.task.gold["index"]))
        said = " ".join(m["content"] for m in transcript.messages if m["role"] == "assistant").lower().replace(",", "")
        missing = [o for o in self.task.gold["outputs"] if str(o).lower().replace(",", "") not in said]
        ok = state_ok and not missing
        return (1.0 if ok else 0.0), {"database_match": state_ok, "missing_outputs": missing}
