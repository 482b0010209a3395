"""A procedural retail world in the style of tau-bench: small, stateful, and generated per task.

Each task builds its own little database from its seed (a handful of users with addresses, their
orders with items, status and payment, and products with variants, prices and stock) and a customer
request whose solution takes 2 to 5 dependent tool calls, each later call using ids read from an
earlier result: find the user, list their orders, open one, then cancel / return / exchange / update
the address. The episode ends at the first assistant turn without a tool call; it scores 1 when the
database then equals the goal state (the reference calls replayed on a fresh copy), so a wrong or a
missing change, or any extra one, scores 0.

Tool results are short JSON with every id a quoted string (``"O1042"``), written as the model writes
the same value in its calls, so copying an id from a result into a call is a plain copy.

Splits: ``"train"`` is infinite (task ``i`` is generated from ``("train", i)``), ``"test"`` has 100
fixed tasks; a train task whose request and reference calls equal a test task's is regenerated.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from pbsd_agents.tools.base import Tool
from pbsd_agents.tools.parsers import format_tool_call

from .base import ChatToolEnv, Task, Transcript
from .data import DisjointSplits

TEST_SIZE = 100
SYSTEM_PROMPT = (
    "You are a customer-support agent for an online store. Use the tools to identify the customer "
    "(by email, or by first name, last name and zip code), look up their orders and the products, and "
    "make exactly the change they ask for: nothing else. Make one tool call per turn. Rules: only a "
    "pending order can be cancelled; only a delivered order can have items returned or exchanged; an "
    "exchange is for another variant of the same product that is in stock. When everything is done, "
    "reply with a short summary and no tool call: that ends the conversation."
)

# product name -> option name -> values; names share no word, so a search by name is unambiguous.
CATALOG: dict[str, dict[str, list[str]]] = {
    "desk lamp": {"color": ["black", "white", "silver", "brass"], "bulb": ["LED", "halogen"]},
    "electric kettle": {"capacity": ["1L", "1.5L", "2L"], "color": ["black", "white", "steel"]},
    "backpack": {"color": ["black", "navy", "green", "grey"], "size": ["small", "medium", "large"]},
    "t-shirt": {"color": ["white", "black", "red", "blue"], "size": ["S", "M", "L", "XL"]},
    "headphones": {"color": ["black", "white", "blue"], "type": ["wired", "wireless"]},
    "running shoes": {"color": ["black", "white", "orange"], "size": ["8", "9", "10", "11"]},
    "water bottle": {"capacity": ["500ml", "750ml", "1L"], "color": ["blue", "green", "pink"]},
    "yoga mat": {"color": ["purple", "black", "teal"], "thickness": ["4mm", "6mm"]},
    "wall clock": {"color": ["black", "wood", "white"], "style": ["modern", "classic"]},
    "coffee maker": {"color": ["black", "red", "steel"], "type": ["drip", "espresso"]},
    "umbrella": {"color": ["black", "yellow", "navy"], "size": ["compact", "full"]},
    "office chair": {"color": ["black", "grey", "blue"], "material": ["mesh", "leather"]},
    "jigsaw puzzle": {"pieces": ["500", "1000", "2000"], "theme": ["animals", "art", "maps"]},
    "sunglasses": {"frame": ["black", "tortoise", "gold"], "lens": ["polarized", "tinted"]},
}
FIRST_NAMES = ["Ava", "Liam", "Maya", "Noah", "Zoe", "Omar", "Lena", "Ivan", "Sara", "Raj", "Emma", "Yuki",
               "Aria", "Leo", "Nina", "Hugo", "Mia", "Ezra", "Ines", "Kai"]
LAST_NAMES = ["Garcia", "Chen", "Smith", "Patel", "Kim", "Silva", "Novak", "Khan", "Brown", "Lopez", "Ito",
              "Moore", "Rossi", "Nguyen", "Adams", "Weber"]
STREETS = ["Oak Street", "Maple Avenue", "Pine Road", "Cedar Lane", "Elm Drive", "Lake Road", "Hill Street",
           "River Way", "Park Avenue", "Sunset Drive"]
CITIES = ["Springfield", "Riverton", "Lakewood", "Fairview", "Milford", "Ashland", "Clayton", "Dover", "Salem"]
PAYMENTS = ["credit_card", "paypal", "gift_card"]
GOALS = ("cancel", "return", "return_two", "exchange", "address", "address_cancel")

_ID = {"type": "string"}


def _schema(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


TOOL_SPECS: list[tuple[str, str, dict]] = [
    ("find_user_by_email", "Find a customer's user id by email.",
     _schema({"email": {"type": "string", "description": "e.g. 'ava.kim12@example.com'"}})),
    ("find_user_by_name_zip", "Find a customer's user id by first name, last name and zip code.",
     _schema({"first_name": {"type": "string"}, "last_name": {"type": "string"}, "zip": {"type": "string"}})),
    ("list_orders", "List a user's orders: order id and status of each.",
     _schema({"user_id": {**_ID, "description": "e.g. 'U123'"}})),
    ("get_order", "Get an order's status, items (item id, product, options, price) and total.",
     _schema({"order_id": {**_ID, "description": "e.g. 'O1042'"}})),
    ("search_products", "Search products by name; returns each match with its variants (item id, options, price, stock).",
     _schema({"query": {"type": "string", "description": "part of the product name, e.g. 'lamp'"}})),
    ("cancel_order", "Cancel a pending order.", _schema({"order_id": _ID})),
    ("return_items", "Request the return of items of a delivered order.",
     _schema({"order_id": _ID, "item_ids": {"type": "array", "items": _ID, "minItems": 1}})),
    ("exchange_item", "Exchange an item of a delivered order for another in-stock variant of the same product.",
     _schema({"order_id": _ID, "item_id": _ID, "new_item_id": _ID})),
    ("update_address", "Update a user's default address.",
     _schema({"user_id": _ID, "street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}})),
]


# ---- the database and its tools -----------------------------------------------------------------


class RetailWorld:
    """One episode's database (``users``, ``orders``, ``products``) with the tools as methods.

    Every tool returns a JSON-able value or, when the call cannot be done, a string starting with
    ``error:``; it never raises.

    Example:
        >>> world = RetailWorld(generate_database(random.Random(0)))
        >>> uid = next(iter(world.db["users"]))
        >>> email = world.db["users"][uid]["email"]
        >>> world.find_user_by_email(email) == {"user_id": uid}
        True
        >>> world.cancel_order("O0")
        "error: no order 'O0'"
    """

    def __init__(self, db: dict):
        self.db = db

    def find_user_by_email(self, email: str):
        for uid, user in self.db["users"].items():
            if user["email"] == email.strip().lower():
                return {"user_id": uid}
        return f"error: no user with email {email!r}"

    def find_user_by_name_zip(self, first_name: str, last_name: str, zip: str):
        key = (first_name.strip().lower(), last_name.strip().lower(), zip.strip())
        for uid, user in self.db["users"].items():
            if (user["first_name"].lower(), user["last_name"].lower(), user["address"]["zip"]) == key:
                return {"user_id": uid}
        return f"error: no user named {first_name} {last_name} with zip {zip!r}"

    def list_orders(self, user_id: str):
        if user_id not in self.db["users"]:
            return f"error: no user {user_id!r}"
        return [{"order_id": oid, "status": o["status"]} for oid, o in self.db["orders"].items() if o["user_id"] == user_id]

    def get_order(self, order_id: str):
        order = self.db["orders"].get(order_id)
        if order is None:
            return f"error: no order {order_id!r}"
        return {k: v for k, v in order.items() if k != "user_id"}

    def search_products(self, query: str):
        q = query.strip().lower()
        found = [
            {"product_id": pid, "name": p["name"], "variants": [
                {"item_id": iid, "options": v["options"], "price": v["price"], "stock": v["stock"]}
                for iid, v in p["variants"].items()]}
            for pid, p in self.db["products"].items() if q and (q in p["name"] or p["name"] in q)
        ]
        return found or f"error: no product matches {query!r}"

    def cancel_order(self, order_id: str):
        order = self.db["orders"].get(order_id)
        if order is None:
            return f"error: no order {order_id!r}"
        if order["status"] != "pending":
            return f"error: order {order_id} is {order['status']}; only a pending order can be cancelled"
        order["status"] = "cancelled"
        for item in order["items"]:  # cancelled goods go back on the shelf
            self.db["products"][item["product_id"]]["variants"][item["item_id"]]["stock"] += 1
        return {"order_id": order_id, "status": "cancelled", "refund": order["total"], "refund_to": order["payment"]}

    def return_items(self, order_id: str, item_ids: list):
        order = self.db["orders"].get(order_id)
        if order is None:
            return f"error: no order {order_id!r}"
        if order["status"] != "delivered":
            return f"error: order {order_id} is {order['status']}; only a delivered order can have items returned"
        in_order = [item["item_id"] for item in order["items"]]
        for iid in item_ids:
            if iid not in in_order:
                return f"error: item {iid!r} is not in order {order_id}; its items: {', '.join(in_order)}"
        if len(set(item_ids)) != len(item_ids):
            return "error: an item is listed twice"
        refund = round(sum(i["price"] for i in order["items"] if i["item_id"] in item_ids), 2)
        order["status"] = "return requested"
        order["returned_items"] = sorted(item_ids)
        return {"order_id": order_id, "status": "return requested", "refund": refund}

    def exchange_item(self, order_id: str, item_id: str, new_item_id: str):
        order = self.db["orders"].get(order_id)
        if order is None:
            return f"error: no order {order_id!r}"
        if order["status"] != "delivered":
            return f"error: order {order_id} is {order['status']}; only a delivered order can have items exchanged"
        item = next((i for i in order["items"] if i["item_id"] == item_id), None)
        if item is None:
            return f"error: item {item_id!r} is not in order {order_id}"
        variants = self.db["products"][item["product_id"]]["variants"]
        if new_item_id == item_id:
            return "error: the new item is the same variant as the old one"
        if new_item_id not in variants:
            return f"error: {new_item_id!r} is not a variant of the {item['name']} (product {item['product_id']})"
        if variants[new_item_id]["stock"] < 1:
            return f"error: item {new_item_id} is out of stock"
        new = variants[new_item_id]
        new["stock"] -= 1
        diff = round(new["price"] - item["price"], 2)
        item.update(item_id=new_item_id, options=dict(new["options"]), price=new["price"])
        order["status"] = "exchange requested"
        return {"order_id": order_id, "status": "exchange requested", "price_difference": diff}

    def update_address(self, user_id: str, street: str, city: str, zip: str):
        user = self.db["users"].get(user_id)
        if user is None:
            return f"error: no user {user_id!r}"
        user["address"] = {"street": street.strip(), "city": city.strip(), "zip": zip.strip()}
        return {"user_id": user_id, "address": user["address"]}


# ---- generation ---------------------------------------------------------------------------------


def _new_id(rng: random.Random, prefix: str, digits: int, used: set) -> str:
    while True:
        ident = prefix + str(rng.randrange(10 ** (digits - 1), 10**digits))
        if ident not in used:
            used.add(ident)
            return ident


def generate_database(rng: random.Random) -> dict:
    """A fresh world: 6 products with 3-4 variants, 4-5 users, 2-4 orders each."""
    used: set[str] = set()
    products = {}
    for name in rng.sample(sorted(CATALOG), 6):
        dims = CATALOG[name]
        combos = [dict(zip(dims, vals)) for vals in _product(list(dims.values()))]
        base = rng.randrange(15, 200)
        variants = {}
        for options in rng.sample(combos, rng.randint(3, 4)):
            iid = _new_id(rng, "I", 4, used)
            variants[iid] = {"options": options, "price": round(base + rng.uniform(-5, 5), 2), "stock": rng.choice([0, 1, 2, 3, 5])}
        products[_new_id(rng, "P", 2, used)] = {"name": name, "variants": variants}
    users, orders = {}, {}
    n_users = rng.randint(4, 5)
    for u in range(n_users):
        if u > 0 and rng.random() < 0.3:  # a namesake elsewhere: the zip code tells them apart
            twin = users[rng.choice(sorted(users))]
            first, last = twin["first_name"], twin["last_name"]
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        uid = _new_id(rng, "U", 3, used)
        users[uid] = {
            "first_name": first, "last_name": last,
            "email": _new_id(rng, f"{first}.{last}".lower(), 2, used) + "@example.com",
            "address": _address(rng, used),
        }
        for _ in range(rng.randint(2, 4)):
            oid = _new_id(rng, "O", 4, used)
            items = []
            for pid in rng.sample(sorted(products), rng.randint(1, 3)):
                iid = rng.choice(sorted(products[pid]["variants"]))
                v = products[pid]["variants"][iid]
                items.append({"item_id": iid, "product_id": pid, "name": products[pid]["name"],
                              "options": dict(v["options"]), "price": v["price"]})
            status = rng.choices(["pending", "delivered", "processed", "cancelled"], [4, 4, 1, 1])[0]
            orders[oid] = {"order_id": oid, "user_id": uid, "status": status, "items": items,
                           "total": round(sum(i["price"] for i in items), 2), "payment": rng.choice(PAYMENTS)}
    return {"users": users, "orders": orders, "products": products}


def _product(lists: list[list[str]]) -> list[tuple]:
    out: list[tuple] = [()]
    for values in lists:
        out = [t + (v,) for t in out for v in values]
    return out


def _address(rng: random.Random, used: set) -> dict:
    return {"street": f"{rng.randint(1, 999)} {rng.choice(STREETS)}", "city": rng.choice(CITIES),
            "zip": _new_id(rng, "", 5, used)}


def _describe(options: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _build_goal(rng: random.Random, db: dict) -> tuple[str, list[tuple[str, dict]], str] | None:
    """A request, its reference calls and the final reply, or None when this world can't host the goal."""
    goal = rng.choice(GOALS)
    uid = rng.choice(sorted(db["users"]))
    user = db["users"][uid]
    by_email = rng.random() < 0.5
    if by_email:
        ident = rng.choice([f"My email is {user['email']}.", f"Hi, this is {user['email']}."])
        calls = [("find_user_by_email", {"email": user["email"]})]
    else:
        ident = rng.choice([f"I'm {user['first_name']} {user['last_name']}, zip code {user['address']['zip']}.",
                            f"Hello, my name is {user['first_name']} {user['last_name']} and my zip is {user['address']['zip']}."])
        calls = [("find_user_by_name_zip", {"first_name": user["first_name"], "last_name": user["last_name"],
                                            "zip": user["address"]["zip"]})]
    orders = {oid: o for oid, o in db["orders"].items() if o["user_id"] == uid}

    def unique_order(status: str) -> tuple[str, dict] | None:
        """An order of ``status`` with a product no other order of that status of this user has."""
        candidates = []
        for oid, o in orders.items():
            if o["status"] != status:
                continue
            for item in o["items"]:
                holders = [x for x, oo in orders.items() if oo["status"] == status and any(i["name"] == item["name"] for i in oo["items"])]
                if holders == [oid]:
                    candidates.append((oid, item))
        return rng.choice(candidates) if candidates else None

    if goal in ("address", "address_cancel"):
        new = {"street": f"{rng.randint(1, 999)} {rng.choice(STREETS)}", "city": rng.choice(CITIES),
               "zip": str(rng.randint(10000, 99999))}
        if new == user["address"]:
            return None
        where = f"{new['street']}, {new['city']}, {new['zip']}"
        calls.append(("update_address", {"user_id": uid, **new}))
        if goal == "address":
            text = rng.choice([f"I moved. Please update my address to {where}.",
                               f"Please change my address to {where}."])
            return f"{ident} {text}", calls, f"Your address is now {where}."
    if goal in ("cancel", "address_cancel"):
        found = unique_order("pending")
        if found is None:
            return None
        oid, item = found
        calls += [("list_orders", {"user_id": uid}), ("get_order", {"order_id": oid}), ("cancel_order", {"order_id": oid})]
        if goal == "address_cancel":
            return (f"{ident} Two things: update my address to {where}, and cancel my pending order with the {item['name']}.",
                    calls, f"Your address is updated and order {oid} is cancelled.")
        text = rng.choice([f"Please cancel my pending order that contains the {item['name']}.",
                           f"I no longer want the {item['name']} I ordered; please cancel that pending order."])
        return f"{ident} {text}", calls, f"Order {oid} is cancelled."
    found = unique_order("delivered")
    if found is None:
        return None
    oid, item = found
    calls += [("list_orders", {"user_id": uid}), ("get_order", {"order_id": oid})]
    if goal == "return":
        calls.append(("return_items", {"order_id": oid, "item_ids": [item["item_id"]]}))
        text = rng.choice([f"I'd like to return the {item['name']} from my delivered order.",
                           f"The {item['name']} I received is not what I wanted; please return it."])
        return f"{ident} {text}", calls, f"The return of the {item['name']} from order {oid} is requested."
    if goal == "return_two":
        others = [i for i in db["orders"][oid]["items"] if i["item_id"] != item["item_id"]]
        if not others:
            return None
        other = rng.choice(others)
        calls.append(("return_items", {"order_id": oid, "item_ids": sorted([item["item_id"], other["item_id"]])}))
        return (f"{ident} Please return both the {item['name']} and the {other['name']} from my delivered order.",
                calls, f"The return of both items from order {oid} is requested.")
    # exchange: another variant of the same product, in stock
    product = db["products"][item["product_id"]]
    options = [(iid, v) for iid, v in product["variants"].items() if iid != item["item_id"] and v["stock"] > 0]
    if not options:
        return None
    new_id, new = rng.choice(options)
    calls += [("search_products", {"query": item["name"]}),
              ("exchange_item", {"order_id": oid, "item_id": item["item_id"], "new_item_id": new_id})]
    text = rng.choice([f"I received the {item['name']} ({_describe(item['options'])}) but I want the one with "
                       f"{_describe(new['options'])} instead. Please exchange it.",
                       f"Please exchange the {item['name']} in my delivered order for the {_describe(new['options'])} variant."])
    return f"{ident} {text}", calls, f"The {item['name']} in order {oid} will be exchanged."


def _generate(split: str, index: int, attempt: int = 0) -> tuple[dict, str, list[tuple[str, dict]], str]:
    """Database, request, reference calls and final reply of task ``index`` (deterministic)."""
    # A str seed hashes with SHA-512 in `random`, so it is the same in every process.
    rng = random.Random(f"pbsd-retail/{split}/{index}/{attempt}")
    while True:
        db = generate_database(rng)
        for _ in range(8):
            goal = _build_goal(rng, db)
            if goal is not None:
                return (db, *goal)


# A train task whose request and reference calls equal a test task's is regenerated.
SPLITS = DisjointSplits(_generate, key=lambda task: [task[1], task[2]], test_size=TEST_SIZE)


def replay(db: dict, calls: list[tuple[str, dict]]) -> dict:
    """A copy of ``db`` after running ``calls``; raises if one fails (they are reference calls)."""
    world = RetailWorld(copy.deepcopy(db))
    for name, args in calls:
        out = getattr(world, name)(**args)
        if isinstance(out, str) and out.startswith("error:"):
            raise RuntimeError(f"reference call {name}({args}) failed: {out}")
    return world.db


# ---- the environment ---------------------------------------------------------------------------


class RetailEnv(ChatToolEnv):
    """Procedural tau-bench-style retail tasks (``pbsd/Retail-v0``).

    Args:
        split: ``"train"`` (infinite) or ``"test"`` (100 fixed tasks).
        max_turns: assistant turns before truncation (default 10; the reference needs at most 6).
        Other arguments as in :class:`ChatToolEnv`.

    Example:
        >>> import gymnasium as gym
        >>> import pbsd_agents.envs
        >>> env = gym.make("pbsd/Retail-v0", split="test").unwrapped
        >>> obs, info = env.reset(options={"index": 3})
        >>> [m["role"] for m in obs]
        ['system', 'user']
        >>> for turn in env.oracle_actions():
        ...     obs, reward, terminated, truncated, info = env.step(turn)
        >>> reward, info["success"]
        (1.0, True)
    """

    def __init__(self, split: str = "train", max_turns: int = 10, **kwargs: Any):
        super().__init__(split=split, max_turns=max_turns, **kwargs)
        self.num_tasks = TEST_SIZE if split == "test" else None
        self.world: RetailWorld | None = None
        # One set of tools for all episodes: each call goes to the current episode's world.
        self.tools = [Tool(name, desc, params, self._bind(name)) for name, desc, params in TOOL_SPECS]

    def _bind(self, name: str):
        def call(**arguments: Any) -> Any:
            if self.world is None:
                return "error: no episode is running"
            return getattr(self.world, name)(**arguments)
        return call

    def make_task(self, index: int) -> Task:
        db, request, calls, final = SPLITS.task(self.split, index)
        oracle = [format_tool_call(n, a, self.tool_format) for n, a in calls] + [final]
        return Task(
            task_id=f"retail-{self.split}-{index}",
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": request}],
            privileged="\n".join(oracle[:-1]),
            oracle=oracle,
            tools=self.tools,
            gold={"db": db, "goal": replay(db, calls), "calls": calls},  # start, goal and reference calls
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        self.world = RetailWorld(copy.deepcopy(self.task.gold["db"]))  # this episode's world
        return obs, info

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        ok = self.world.db == self.task.gold["goal"]
        return (1.0 if ok else 0.0), {"database_match": ok}
