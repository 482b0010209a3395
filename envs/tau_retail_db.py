"""tau-bench retail's database and its 16 tools, with tau-bench's semantics, written for this kit.

Every tool does what tau-bench's retail tool of the same name does (``sierra-research/tau-bench``,
``tau_bench/envs/retail/tools``): the same checks in the same order, the same changes to the
database (unrounded float sums where tau-bench keeps them, its sorting, its status changes for empty
item lists), and the same output text: ``json.dumps`` of the changed record, or ``"Error: ..."``.
:meth:`RetailDB.invoke` runs a tool the way tau-bench's ``Env.step`` does: an exception raised
inside it becomes the output ``"Error: <message>"`` and whatever it changed before stays changed.

Kept differences, each bounded: ``calculate`` reads its expression with ``ast`` and never evaluates
it (same results and messages for what tau-bench's ``eval`` accepts, except that an integer beyond
:data:`MAX_INT_BITS` bits is refused instead of computed for minutes); a call to a non-callable
(``(1)(2)``) reports Python's message without making the call.

The tables are read once per process and shared; an episode copies a record the first time a tool
changes it (copy-on-write), so a reset costs microseconds.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import operator
import warnings
from typing import Any

# The tools in tau-bench's order; their argument schemas, used when a data folder has none on disk.
_STR = {"type": "string"}
_STRS = {"type": "array", "items": {"type": "string"}}
_ORDER = {"type": "string", "description": "The order id, e.g. '#W0000000' (it starts with '#')."}
_ADDRESS = {k: _STR for k in ("address1", "address2", "city", "state", "country", "zip")}
_PAY = {"type": "string", "description": "A payment method id of the user, e.g. 'credit_card_0000000' or 'gift_card_0000000'."}


def _params(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


# Written for this kit (the data folder's own descriptions are preferred when it has them).
TOOL_SPECS: list[tuple[str, str, dict]] = [
    ("calculate", "Evaluate an arithmetic expression (numbers, + - * /, parentheses); the result is rounded to 2 decimals.",
     _params({"expression": {"type": "string", "description": "e.g. '(199.99 - 20) * 2'"}})),
    ("cancel_pending_order", "Cancel a pending order and refund its payments (gift cards at once, other methods in 5-7 "
     "business days). Confirm the details with the user first.",
     _params({"order_id": _ORDER, "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]}})),
    ("exchange_delivered_order_items", "Exchange items of a delivered order for other variants of the same products. "
     "Call it once per order, with every item to exchange; confirm with the user first.",
     _params({"order_id": _ORDER, "item_ids": _STRS, "new_item_ids": _STRS, "payment_method_id": _PAY})),
    ("find_user_id_by_email", "Look up a user id by email address.", _params({"email": _STR})),
    ("find_user_id_by_name_zip", "Look up a user id by first name, last name and zip code.",
     _params({"first_name": _STR, "last_name": _STR, "zip": _STR})),
    ("get_order_details", "Get an order's status, items, address and payments.", _params({"order_id": _ORDER})),
    ("get_product_details", "Get a product's variants (item ids, options, price, availability).",
     _params({"product_id": {"type": "string", "description": "A product id (not an item id), e.g. '6086499569'."}})),
    ("get_user_details", "Get a user's profile: name, address, email, payment methods and orders.",
     _params({"user_id": {"type": "string", "description": "e.g. 'sara_doe_496'"}})),
    ("list_all_product_types", "List every product type: name and product id.", _params({})),
    ("modify_pending_order_address", "Change the shipping address of a pending order; confirm with the user first.",
     _params({"order_id": _ORDER, **_ADDRESS})),
    ("modify_pending_order_items", "Change items of a pending order to other variants of the same products. A pending "
     "order can be modified this way only once; confirm with the user first.",
     _params({"order_id": _ORDER, "item_ids": _STRS, "new_item_ids": _STRS, "payment_method_id": _PAY})),
    ("modify_pending_order_payment", "Pay a pending order with another payment method of the user; confirm first.",
     _params({"order_id": _ORDER, "payment_method_id": _PAY})),
    ("modify_user_address", "Change a user's default address; confirm with the user first.",
     _params({"user_id": _STR, **_ADDRESS})),
    ("return_delivered_order_items", "Request the return of items of a delivered order; the refund goes to the original "
     "payment method or a gift card. Confirm with the user first.",
     _params({"order_id": _ORDER, "item_ids": _STRS, "payment_method_id": _PAY})),
    ("think", "Think something through; nothing is looked up or changed.", _params({"thought": _STR})),
    ("transfer_to_human_agents", "Hand the conversation to a human agent, with a summary of the issue. This ends the "
     "conversation.", _params({"summary": _STR})),
]
TOOL_NAMES = tuple(name for name, _, _ in TOOL_SPECS)
TERMINAL_TOOLS = frozenset({"transfer_to_human_agents"})  # tau-bench's retail env ends the episode after it


def canonical(value: Any) -> str:
    """A text that two values share exactly when tau-bench's database hash would: keys sorted, list
    order kept, and numbers written with their type (``0`` and ``0.0`` differ, as in its ``str()``)."""
    return json.dumps(value, sort_keys=True)


class RetailDB:
    """One episode's tau-bench retail database; every tool is a method returning tau-bench's output text.

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
        >>> db.invoke("find_user_id_by_email", email="ANN@x.com")
        'ann_1'
        >>> json.loads(db.invoke("cancel_pending_order", order_id="#W1", reason="no longer needed"))["status"]
        'cancelled'
        >>> db.invoke("cancel_pending_order", order_id="#W1", reason="no longer needed")
        'Error: non-pending order cannot be cancelled'
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
        """Whether both databases hold the same data, compared like tau-bench's hash (types included)."""
        if other._base is not self._base:
            return canonical(self.state()) == canonical(other.state())
        # Records neither side copied are the shared base objects: only the copied ones can differ.
        return all(canonical(getattr(self, t)[k]) == canonical(getattr(other, t)[k]) for t, k in self._owned | other._owned)

    def invoke(self, name: str, /, **arguments: Any) -> str:
        """Run tool ``name`` as tau-bench's env does: an exception becomes ``"Error: <message>"``."""
        if name not in TOOL_NAMES:
            return f"Unknown action {name}"
        try:
            return getattr(self, name)(**arguments)
        except Exception as exc:  # tau-bench reports the exception to the agent; earlier changes stay
            return f"Error: {exc}"

    def _writable(self, table: str, key: str) -> dict:
        records = getattr(self, table)
        if (table, key) not in self._owned:
            records[key] = copy.deepcopy(records[key])
            self._owned.add((table, key))
        return records[key]

    # -- lookups --

    def find_user_id_by_email(self, email: str) -> str:
        for user_id, user in self.users.items():
            if user["email"].lower() == email.lower():
                return user_id
        return "Error: user not found"

    def find_user_id_by_name_zip(self, first_name: str, last_name: str, zip: str) -> str:
        for user_id, user in self.users.items():
            name = user["name"]
            if (name["first_name"].lower() == first_name.lower() and name["last_name"].lower() == last_name.lower()
                    and user["address"]["zip"] == zip):
                return user_id
        return "Error: user not found"

    def get_user_details(self, user_id: str) -> str:
        return json.dumps(self.users[user_id]) if user_id in self.users else "Error: user not found"

    def get_order_details(self, order_id: str) -> str:
        return json.dumps(self.orders[order_id]) if order_id in self.orders else "Error: order not found"

    def get_product_details(self, product_id: str) -> str:
        return json.dumps(self.products[product_id]) if product_id in self.products else "Error: product not found"

    def list_all_product_types(self) -> str:
        names = {p["name"]: p["product_id"] for p in self.products.values()}  # a repeated name keeps its last id
        return json.dumps(dict(sorted(names.items())))

    def calculate(self, expression: str) -> str:
        if any(ch not in _CALC_CHARS for ch in expression):
            return "Error: invalid characters in expression"
        try:
            return str(round(float(arithmetic(expression)), 2))
        except Exception as exc:
            return f"Error: {exc}"

    def think(self, thought: str) -> str:
        return ""

    def transfer_to_human_agents(self, summary: str) -> str:
        return "Transfer successful"

    # -- changes (checks first, in tau-bench's order; then the changes, in its order) --

    def cancel_pending_order(self, order_id: str, reason: str) -> str:
        order = self.orders.get(order_id)
        if order is None:
            return "Error: order not found"
        if order["status"] != "pending":
            return "Error: non-pending order cannot be cancelled"
        if reason not in ("no longer needed", "ordered by mistake"):
            return "Error: invalid reason"
        order = self._writable("orders", order_id)
        refunds = []
        for entry in order["payment_history"]:  # every entry, refunds included, as tau-bench does
            method_id = entry["payment_method_id"]
            refunds.append({"transaction_type": "refund", "amount": entry["amount"], "payment_method_id": method_id})
            if "gift_card" in method_id:  # gift cards are refunded at once
                method = self._writable("users", order["user_id"])["payment_methods"][method_id]
                method["balance"] = round(method["balance"] + entry["amount"], 2)
        order["status"] = "cancelled"
        order["cancel_reason"] = reason
        order["payment_history"].extend(refunds)
        return json.dumps(order)

    def modify_pending_order_address(self, order_id, address1, address2, city, state, country, zip) -> str:
        problem = self._check_status(order_id, "pending", "Error: non-pending order cannot be modified")
        if problem:
            return problem
        order = self._writable("orders", order_id)
        order["address"] = _address(address1, address2, city, state, country, zip)
        return json.dumps(order)

    def modify_user_address(self, user_id, address1, address2, city, state, country, zip) -> str:
        if user_id not in self.users:
            return "Error: user not found"
        user = self._writable("users", user_id)
        user["address"] = _address(address1, address2, city, state, country, zip)
        return json.dumps(user)

    def modify_pending_order_payment(self, order_id: str, payment_method_id: str) -> str:
        problem = self._check_status(order_id, "pending", "Error: non-pending order cannot be modified")
        if problem:
            return problem
        order = self.orders[order_id]
        methods = self.users[order["user_id"]]["payment_methods"]
        if payment_method_id not in methods:
            return "Error: payment method not found"
        history = order["payment_history"]
        if len(history) > 1 or history[0]["transaction_type"] != "payment":
            return "Error: there should be exactly one payment for a pending order"
        old_id, amount = history[0]["payment_method_id"], history[0]["amount"]
        if old_id == payment_method_id:
            return "Error: the new payment method should be different from the current one"
        if methods[payment_method_id]["source"] == "gift_card" and methods[payment_method_id]["balance"] < amount:
            return "Error: insufficient gift card balance to pay for the order"
        order = self._writable("orders", order_id)
        order["payment_history"].extend([
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old_id},
        ])
        methods = self._writable("users", order["user_id"])["payment_methods"]
        if methods[payment_method_id]["source"] == "gift_card":
            methods[payment_method_id]["balance"] = round(methods[payment_method_id]["balance"] - amount, 2)
        if "gift_card" in old_id:
            methods[old_id]["balance"] = round(methods[old_id]["balance"] + amount, 2)
        return json.dumps(order)

    def modify_pending_order_items(self, order_id, item_ids, new_item_ids, payment_method_id) -> str:
        problem = self._check_status(order_id, "pending", "Error: non-pending order cannot be modified")
        problem = problem or self._check_swap(order_id, item_ids, new_item_ids)
        if problem:
            return problem
        order = self.orders[order_id]
        diff = self._price_difference(order, item_ids, new_item_ids)  # not rounded: tau-bench stores the raw sum
        methods = self.users[order["user_id"]]["payment_methods"]
        if payment_method_id not in methods:
            return "Error: payment method not found"
        if methods[payment_method_id]["source"] == "gift_card" and methods[payment_method_id]["balance"] < diff:
            return "Error: insufficient gift card balance to pay for the new item"
        order = self._writable("orders", order_id)
        # Even with no items (difference 0) a refund entry is written and the status changes, as in tau-bench.
        order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund", "amount": abs(diff),
                                         "payment_method_id": payment_method_id})
        if methods[payment_method_id]["source"] == "gift_card":
            method = self._writable("users", order["user_id"])["payment_methods"][payment_method_id]
            method["balance"] = round(method["balance"] - diff, 2)
        for old_id, new_id in zip(item_ids, new_item_ids):
            # The first item that has the id now: an item changed earlier in this loop can match a later pair.
            item = next(it for it in order["items"] if it["item_id"] == old_id)
            variant = self.products[item["product_id"]]["variants"][new_id]
            item["item_id"] = new_id
            item["price"] = variant["price"]
            item["options"] = copy.deepcopy(variant["options"])
        order["status"] = "pending (item modified)"
        return json.dumps(order)

    def exchange_delivered_order_items(self, order_id, item_ids, new_item_ids, payment_method_id) -> str:
        problem = self._check_status(order_id, "delivered", "Error: non-delivered order cannot be exchanged")
        problem = problem or self._check_swap(order_id, item_ids, new_item_ids)
        if problem:
            return problem
        order = self.orders[order_id]
        diff = round(self._price_difference(order, item_ids, new_item_ids), 2)  # an exchange rounds it
        methods = self.users[order["user_id"]]["payment_methods"]
        if payment_method_id not in methods:
            return "Error: payment method not found"
        if methods[payment_method_id]["source"] == "gift_card" and methods[payment_method_id]["balance"] < diff:
            return "Error: insufficient gift card balance to pay for the price difference"
        order = self._writable("orders", order_id)
        order["status"] = "exchange requested"
        order["exchange_items"] = sorted(item_ids)
        order["exchange_new_items"] = sorted(new_item_ids)  # sorted on its own, as tau-bench does
        order["exchange_payment_method_id"] = payment_method_id
        order["exchange_price_difference"] = diff
        return json.dumps(order)

    def return_delivered_order_items(self, order_id: str, item_ids: list, payment_method_id: str) -> str:
        problem = self._check_status(order_id, "delivered", "Error: non-delivered order cannot be returned")
        if problem:
            return problem
        order = self.orders[order_id]
        if payment_method_id not in self.users[order["user_id"]]["payment_methods"]:
            return "Error: payment method not found"
        if "gift_card" not in payment_method_id and payment_method_id != order["payment_history"][0]["payment_method_id"]:
            return "Error: payment method should be either the original payment method or a gift card"
        if _missing_item(order, item_ids) is not None:
            return "Error: some item not found"
        order = self._writable("orders", order_id)
        order["status"] = "return requested"
        order["return_items"] = sorted(item_ids)
        order["return_payment_method_id"] = payment_method_id
        return json.dumps(order)

    # -- shared checks --

    def _check_status(self, order_id: str, status: str, wrong_status: str) -> str | None:
        if order_id not in self.orders:
            return "Error: order not found"
        return wrong_status if self.orders[order_id]["status"] != status else None

    def _check_swap(self, order_id: str, item_ids: list, new_item_ids: list) -> str | None:
        """tau-bench's checks of a modify / exchange: items present (duplicates counted), lists of equal
        length, each new id an available variant of its old item's product."""
        order = self.orders[order_id]
        missing = _missing_item(order, item_ids)
        if missing is not None:
            return f"Error: {missing} not found"
        if len(item_ids) != len(new_item_ids):
            return "Error: the number of items to be exchanged should match"
        for old_id, new_id in zip(item_ids, new_item_ids):
            variants = self.products[_first_item(order, old_id)["product_id"]]["variants"]
            if not (new_id in variants and variants[new_id]["available"]):
                return f"Error: new item {new_id} not found or available"
        return None

    def _price_difference(self, order: dict, item_ids: list, new_item_ids: list):
        diff = 0  # an int until a price is added: an empty list gives 0, not 0.0, as in tau-bench
        for old_id, new_id in zip(item_ids, new_item_ids):
            item = _first_item(order, old_id)
            diff += self.products[item["product_id"]]["variants"][new_id]["price"] - item["price"]
        return diff


def _first_item(order: dict, item_id: str) -> dict:
    return next(it for it in order["items"] if it["item_id"] == item_id)


def _missing_item(order: dict, item_ids: list) -> str | None:
    """The first listed id that the order holds fewer times than it is listed, or None."""
    held = [it["item_id"] for it in order["items"]]
    return next((i for i in item_ids if item_ids.count(i) > held.count(i)), None)


def _address(address1, address2, city, state, country, zip) -> dict:
    # tau-bench's key order, which shows in the tool's JSON output
    return {"address1": address1, "address2": address2, "city": city, "state": state, "country": country, "zip": zip}


# ---- calculate: read with ast, never evaluated ------------------------------------------------------

_CALC_CHARS = frozenset("0123456789+-*/(). ")
MAX_INT_BITS = 100_000  # a larger integer (e.g. 9**9**9) is refused: tau-bench would compute it for minutes
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def arithmetic(expression: str) -> Any:
    """The value Python gives ``expression`` (the characters ``0-9 + - * / ( ) .`` and spaces), with the
    same exceptions and messages, computed from its syntax tree: nothing is evaluated or called.

    Example:
        >>> arithmetic("2 ** 3"), arithmetic("(1 + 2) * 3 / 4"), arithmetic("7 // 2")
        (8, 2.25, 3)
        >>> arithmetic("1/0")
        Traceback (most recent call last):
        ...
        ZeroDivisionError: division by zero
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "'int' object is not callable; perhaps you missed a comma?"
        tree = ast.parse(expression.lstrip(" \t"), filename="<string>", mode="eval")
    # An explicit stack, not recursion: a long chain "1+1+...+1" is as deep as it is long.
    done: dict[int, Any] = {}
    stack: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while stack:
        node, ready = stack.pop()
        children = _children(node)
        if not ready:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(children))
            continue
        args = [done.pop(id(child)) for child in children]
        done[id(node)] = _apply(node, args)
    return done[id(tree.body)]


def _children(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp):
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, ast.Call):
        return [node.func, *node.args]
    if isinstance(node, ast.Starred):
        return [node.value]
    if isinstance(node, ast.Tuple):
        return list(node.elts)
    return []


def _apply(node: ast.AST, args: list) -> Any:
    if isinstance(node, ast.Constant) and (type(node.value) in (int, float) or node.value is Ellipsis):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = args
        if isinstance(node.op, ast.Pow) and _int_like(left) and _int_like(right) and right > 0 and abs(left) > 1 \
                and right * math.log2(abs(left)) > MAX_INT_BITS:
            raise OverflowError("int too large to convert to float")
        value = _BINOPS[type(node.op)](left, right)
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise OverflowError("int too large to convert to float")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](args[0])
    if isinstance(node, ast.Tuple):  # only "()" can be written with these characters
        return tuple(args)
    if isinstance(node, ast.Starred):
        if not isinstance(args[0], tuple):
            raise TypeError(f"argument after * must be an iterable, not {type(args[0]).__name__}")
        return args[0]
    if isinstance(node, ast.Call):  # nothing these characters spell is callable
        raise TypeError(f"'{type(args[0]).__name__}' object is not callable")
    raise ValueError(f"unsupported expression: {type(node).__name__}")


def _int_like(value: Any) -> bool:
    return isinstance(value, int)
