"""``pbsd/ToolCall-v0``: procedural function-calling tasks, scored with the BFCL-style checker.

A catalog of typed tools (strings, integers, numbers, enums, booleans, arrays, nested objects,
optional arguments with defaults) and, for each, a generator that draws argument values and writes a
short user request that mentions every value the call needs. Three variants:

- ``single``: one tool is offered, one call is expected;
- ``multiple``: the right tool hides among 2-4 distractors, one call is expected;
- ``parallel``: 2-3 calls in one turn (the same tool with different arguments, or different tools),
  among 0-2 distractors; the calls may come in any order.

Gold calls use the checker's form (``{name: {param: [acceptable]}}``): an optional argument the
request does not mention may be omitted or given its default; an int is fine where a number is
expected; strings compare after normalisation (case, spaces, punctuation).
"""

from __future__ import annotations

import functools
import random
from typing import Any, Callable

from pbsd_agents.tools.base import Tool, acknowledge
from pbsd_agents.tools.parsers import format_hint, format_tool_calls

from .base import ChatToolEnv, Task, Transcript
from .checker import check_calls
from .data import DisjointSplits

VARIANTS = ("single", "multiple", "parallel")
_MODE = {"single": "simple", "multiple": "multiple", "parallel": "parallel"}

SYSTEM_PROMPT = "You are a helpful assistant with tools. Answer the request with the right tool call(s) only."

# ---- value pools -------------------------------------------------------------------------------

CITIES = ["Paris", "Rome", "Tokyo", "Berlin", "Madrid", "Lisbon", "Oslo", "Cairo", "Lima", "Seoul",
          "Boston", "Denver", "Toronto", "Sydney", "Dublin", "Vienna", "Prague", "Nairobi", "Austin", "Milan"]
NAMES = ["Anna", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kofi", "Lena",
         "Maya", "Nils", "Omar", "Paula", "Rosa", "Sam", "Tara", "Yuki"]
SURNAMES = ["Smith", "Garcia", "Chen", "Novak", "Silva", "Okafor", "Berg", "Rossi", "Kim", "Dubois"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "INR"]
LANGUAGES = ["english", "french", "german", "spanish", "italian", "japanese", "portuguese"]
CUISINES = ["italian", "japanese", "mexican", "indian", "thai", "french", "chinese", "greek"]
ARTISTS = ["Adele", "Coldplay", "Daft Punk", "Queen", "Shakira", "Drake", "Beyonce", "Radiohead", "ABBA", "Muse"]
PHRASES = ["good morning", "where is the station", "thank you very much", "see you tomorrow", "how much is this",
           "the train is late", "I like green tea", "open the window"]
SUBJECTS = ["Lunch", "Budget", "Trip plan", "Meeting notes", "Invoice", "Weekend", "Report", "Party"]
BODIES = ["See you at noon", "Numbers attached", "Can we talk today", "Running late", "All done",
          "Please review", "Call me back", "Thanks a lot"]
TASKS = ["buy milk", "call the bank", "book a dentist", "water the plants", "pay rent", "renew passport",
         "clean the garage", "send the report"]
TAGS = ["home", "work", "urgent", "errand", "finance", "health"]
LABELS = ["gym", "work", "meds", "school run", "yoga", "standup"]
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "IBM", "ORCL"]
TOPPINGS = ["mushrooms", "olives", "ham", "pepperoni", "onions", "peppers", "pineapple", "basil"]
STREETS = ["12 Oak Street", "5 Main Road", "88 Lake Avenue", "3 Hill Lane", "41 Park Drive", "7 River Way"]
ROOMS = ["kitchen", "bedroom", "living room", "office", "bathroom"]
EVENTS = ["Team sync", "Dentist", "Yoga class", "Project review", "Birthday dinner", "Budget call"]
MOVIES = ["Inception", "Up", "Amelie", "Heat", "Alien", "Jaws", "Rocky", "Coco"]
REVIEWS = ["loved it", "too long", "great music", "a bit slow", "funny and smart"]
COUNTRIES = ["France", "Japan", "Brazil", "Canada", "Kenya", "Italy", "Peru", "India"]


def _date(r: random.Random) -> str:
    return f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"


def _obj(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required}


def _s(desc: str, **kw: Any) -> dict:
    return {"type": "string", "description": desc, **kw}


def _i(desc: str, **kw: Any) -> dict:
    return {"type": "integer", "description": desc, **kw}


def _n(desc: str, **kw: Any) -> dict:
    return {"type": "number", "description": desc, **kw}


def _b(desc: str, **kw: Any) -> dict:
    return {"type": "boolean", "description": desc, **kw}


def _list(desc: str, items: dict) -> dict:
    return {"type": "array", "items": items, "description": desc}


# ---- the catalog: (name, description, parameters, generator) -----------------------------------
# A generator draws the arguments and writes the request; each mentions every value the call holds.


def _weather(r):
    a = {"city": r.choice(CITIES)}
    t, end = r.choice([("What's the weather in {city}", "?"), ("Get the weather for {city}", "."),
                       ("Check the forecast in {city}", ".")])
    t = t.format(**a)
    if r.random() < 0.4:
        a["days"] = r.randint(2, 7)
        t += f" for the next {a['days']} days"
    if r.random() < 0.4:
        a["unit"] = r.choice(["celsius", "fahrenheit"])
        t += f" in {a['unit']}"
    return t + end, a


def _currency(r):
    src, dst = r.sample(CURRENCIES, 2)
    amount = r.choice([r.randint(5, 900), round(r.uniform(1, 500), 2)])
    a = {"amount": float(amount), "from_currency": src, "to_currency": dst}
    t = r.choice(["Convert {x} {s} to {d}.", "How much is {x} {s} in {d}?", "Change {x} {s} into {d}."])
    return t.format(x=amount, s=src, d=dst), a


def _email(r):
    name = r.choice(NAMES)
    a = {"to": f"{name.lower()}@example.com", "subject": r.choice(SUBJECTS), "body": r.choice(BODIES)}
    t = f"Email {a['to']} with subject '{a['subject']}' saying '{a['body']}'"
    if r.random() < 0.3:
        a["cc"] = [f"{n.lower()}@example.com" for n in r.sample([n for n in NAMES if n != name], r.randint(1, 2))]
        t += ", cc " + " and ".join(a["cc"])
    return t + ".", a


def _alarm(r):
    a = {"hour": r.randint(0, 23), "minute": r.choice([0, 5, 10, 15, 20, 30, 45, 50])}
    daily = r.random() < 0.3
    t = ("Set a daily alarm for " if daily else "Set an alarm for ") + f"{a['hour']}:{a['minute']:02d}"
    if daily:
        a["repeat_daily"] = True
    if r.random() < 0.4:
        a["label"] = r.choice(LABELS)
        t += f" labeled '{a['label']}'"
    return t + ".", a


def _flight(r):
    src, dst = r.sample(CITIES, 2)
    a = {"origin": src, "destination": dst, "date": _date(r)}
    t = f"Book a flight from {src} to {dst} on {a['date']}"
    if r.random() < 0.4:
        a["passengers"] = r.randint(2, 5)
        t += f" for {a['passengers']} people"
    if r.random() < 0.4:
        a["cabin"] = r.choice(["business", "first"])
        t += f" in {a['cabin']} class"
    return t + ".", a


def _restaurants(r):
    a = {"city": r.choice(CITIES), "cuisine": r.choice(CUISINES)}
    open_now = r.random() < 0.3
    t = f"Find {a['cuisine']} restaurants in {a['city']}"
    if open_now:
        a["open_now"] = True
        t += " that are open now"
    if r.random() < 0.4:
        a["max_price"] = r.randint(1, 3)
        t += f" with a price level of at most {a['max_price']}"
    return t + ".", a


def _event(r):
    a = {"title": r.choice(EVENTS), "date": _date(r), "duration_minutes": r.choice([15, 30, 45, 60, 90, 120])}
    t = f"Create a {a['duration_minutes']}-minute event '{a['title']}' on {a['date']}"
    if r.random() < 0.4:
        a["attendees"] = r.sample(NAMES, r.randint(1, 3))
        t += " with " + " and ".join(a["attendees"])
    return t + ".", a


def _bmi(r):
    w, h = round(r.uniform(45, 110), 1), round(r.uniform(1.5, 2.0), 2)
    a = {"weight_kg": w, "height_m": h}
    t = r.choice(["What is the BMI for {w} kg and {h} m?", "Compute my BMI: I weigh {w} kg and I am {h} m tall."])
    return t.format(w=w, h=h), a


def _translate(r):
    a = {"text": r.choice(PHRASES), "target_language": r.choice([x for x in LANGUAGES if x != "english"])}
    t = f"Translate '{a['text']}' to {a['target_language']}"
    if r.random() < 0.3:
        a["source_language"] = "english"
        t += " from english"
    return t + ".", a


def _music(r):
    a = {"artist": r.choice(ARTISTS)}
    shuffle = r.random() < 0.3
    t = ("Shuffle songs by " if shuffle else "Play songs by ") + a["artist"]
    if shuffle:
        a["shuffle"] = True
    if r.random() < 0.4:
        a["volume"] = r.choice([10, 20, 30, 40, 60, 70, 80, 90])
        t += f" at volume {a['volume']}"
    return t + ".", a


def _todo(r):
    a = {"task": r.choice(TASKS)}
    t = f"Add '{a['task']}' to my to-do list"
    if r.random() < 0.4:
        a["priority"] = r.choice(["low", "high"])
        t += f" with {a['priority']} priority"
    if r.random() < 0.4:
        a["tags"] = r.sample(TAGS, r.randint(1, 2))
        t += ", tagged " + " and ".join(a["tags"])
    return t + ".", a


def _stock(r):
    a = {"symbol": r.choice(SYMBOLS)}
    t = f"Get the stock price of {a['symbol']}"
    if r.random() < 0.3:
        a["exchange"] = "NYSE"
        t += " on the NYSE"
    return t + ".", a


def _pizza(r):
    a = {"size": r.choice(["small", "medium", "large"]), "toppings": r.sample(TOPPINGS, r.randint(1, 3)),
         "address": {"street": r.choice(STREETS), "city": r.choice(CITIES)}}
    t = f"Order a {a['size']} pizza with {' and '.join(a['toppings'])} to {a['address']['street']}, {a['address']['city']}."
    return t, a


def _thermostat(r):
    a = {"temperature": r.choice([float(r.randint(16, 26)), r.randint(32, 52) / 2]), "room": r.choice(ROOMS)}
    t = f"Set the {a['room']} thermostat to {a['temperature']:g} degrees"
    if r.random() < 0.4:
        a["mode"] = r.choice(["heat", "cool"])
        t += f" in {a['mode']} mode"
    return t + ".", a


def _loan(r):
    a = {"principal": float(r.randint(5, 400) * 1000), "annual_rate": r.choice([2.5, 3.0, 3.75, 4.2, 5.0, 6.5]),
         "years": r.choice([5, 10, 15, 20, 25, 30])}
    t = f"What is the monthly payment on a {a['principal']:.0f} loan at {a['annual_rate']:g}% for {a['years']} years?"
    return t, a


def _hotel(r):
    a = {"city": r.choice(CITIES), "check_in": _date(r), "nights": r.randint(1, 9)}
    t = f"Book a hotel in {a['city']} from {a['check_in']} for {a['nights']} nights"
    if r.random() < 0.3:
        a["guests"] = r.choice([1, 3, 4])
        t += f" for {a['guests']} guests"
    if r.random() < 0.4:
        which = r.choice(["breakfast", "pool"])
        a["preferences"] = {which: True}
        t += f" with {which}"
    return t + ".", a


def _sort(r):
    a = {"numbers": [r.randint(-20, 99) for _ in range(r.randint(3, 6))]}
    desc = r.random() < 0.4
    t = ("Sort these numbers from largest to smallest: " if desc else "Sort these numbers: ") + ", ".join(map(str, a["numbers"]))
    if desc:
        a["descending"] = True
    return t + ".", a


def _contact(r):
    first, last = r.choice(NAMES), r.choice(SURNAMES)
    a = {"name": f"{first} {last}", "phone": f"555-{r.randint(1000, 9999)}"}
    t = f"Save a contact for {a['name']}, phone {a['phone']}"
    if r.random() < 0.5:
        a["address"] = {"city": r.choice(CITIES), "country": r.choice(COUNTRIES)}
        t += f", living in {a['address']['city']}, {a['address']['country']}"
    return t + ".", a


def _distance(r):
    src, dst = r.sample(CITIES, 2)
    a = {"origin": src, "destination": dst}
    t = f"How far is {src} from {dst}"
    if r.random() < 0.4:
        a["unit"] = "miles"
        t += " in miles"
    return t + "?", a


def _rate(r):
    a = {"title": r.choice(MOVIES), "stars": r.randint(1, 5)}
    t = f"Rate the movie {a['title']} {a['stars']} stars"
    if r.random() < 0.4:
        a["review"] = r.choice(REVIEWS)
        t += f" with the review '{a['review']}'"
    return t + ".", a


CATALOG: list[tuple[str, str, dict, Callable[[random.Random], tuple[str, dict]]]] = [
    ("get_weather", "Get the weather forecast for a city.", _obj({
        "city": _s("City name."),
        "unit": _s("Temperature unit.", enum=["celsius", "fahrenheit"], default="celsius"),
        "days": _i("Number of forecast days, 1-7.", default=1)}, ["city"]), _weather),
    ("convert_currency", "Convert an amount of money between currencies.", _obj({
        "amount": _n("Amount to convert."),
        "from_currency": _s("Currency code to convert from.", enum=CURRENCIES),
        "to_currency": _s("Currency code to convert to.", enum=CURRENCIES)}, ["amount", "from_currency", "to_currency"]), _currency),
    ("send_email", "Send an email.", _obj({
        "to": _s("Recipient address."), "subject": _s("Subject line."), "body": _s("Message text."),
        "cc": _list("Addresses to copy.", {"type": "string"})}, ["to", "subject", "body"]), _email),
    ("set_alarm", "Set an alarm.", _obj({
        "hour": _i("Hour, 0-23."), "minute": _i("Minute, 0-59."), "label": _s("Alarm label."),
        "repeat_daily": _b("Repeat every day.", default=False)}, ["hour", "minute"]), _alarm),
    ("book_flight", "Book a flight.", _obj({
        "origin": _s("Departure city."), "destination": _s("Arrival city."), "date": _s("Date, YYYY-MM-DD."),
        "passengers": _i("Number of passengers.", default=1),
        "cabin": _s("Cabin class.", enum=["economy", "business", "first"], default="economy")},
        ["origin", "destination", "date"]), _flight),
    ("search_restaurants", "Find restaurants in a city.", _obj({
        "city": _s("City name."), "cuisine": _s("Type of food.", enum=CUISINES),
        "max_price": _i("Highest price level, 1-4."), "open_now": _b("Only places open now.", default=False)},
        ["city", "cuisine"]), _restaurants),
    ("create_event", "Add an event to the calendar.", _obj({
        "title": _s("Event title."), "date": _s("Date, YYYY-MM-DD."), "duration_minutes": _i("Length in minutes."),
        "attendees": _list("People to invite.", {"type": "string"})}, ["title", "date", "duration_minutes"]), _event),
    ("calculate_bmi", "Compute the body mass index.", _obj({
        "weight_kg": _n("Weight in kilograms."), "height_m": _n("Height in meters.")}, ["weight_kg", "height_m"]), _bmi),
    ("translate_text", "Translate text into another language.", _obj({
        "text": _s("Text to translate."), "target_language": _s("Language to translate into.", enum=LANGUAGES),
        "source_language": _s("Language of the text.", enum=["auto"] + LANGUAGES, default="auto")},
        ["text", "target_language"]), _translate),
    ("play_music", "Play songs by an artist.", _obj({
        "artist": _s("Artist name."), "shuffle": _b("Shuffle the songs.", default=False),
        "volume": _i("Volume, 0-100.", default=50)}, ["artist"]), _music),
    ("add_todo", "Add an item to the to-do list.", _obj({
        "task": _s("What to do."), "priority": _s("Priority.", enum=["low", "medium", "high"], default="medium"),
        "tags": _list("Tags for the item.", {"type": "string"})}, ["task"]), _todo),
    ("get_stock_price", "Get the latest price of a stock.", _obj({
        "symbol": _s("Ticker symbol."), "exchange": _s("Stock exchange.", enum=["NASDAQ", "NYSE"], default="NASDAQ")},
        ["symbol"]), _stock),
    ("order_pizza", "Order a pizza for delivery.", _obj({
        "size": _s("Pizza size.", enum=["small", "medium", "large"]),
        "toppings": _list("Toppings, in order.", {"type": "string"}),
        "address": {**_obj({"street": _s("Street and number."), "city": _s("City.")}, ["street", "city"]),
                    "description": "Delivery address."}}, ["size", "toppings", "address"]), _pizza),
    ("set_thermostat", "Set a room's thermostat.", _obj({
        "temperature": _n("Target temperature in degrees Celsius."), "room": _s("Room name."),
        "mode": _s("Operating mode.", enum=["heat", "cool", "auto"], default="auto")}, ["temperature", "room"]), _thermostat),
    ("loan_payment", "Compute the monthly payment of a loan.", _obj({
        "principal": _n("Amount borrowed."), "annual_rate": _n("Yearly interest rate in percent."),
        "years": _i("Length of the loan in years.")}, ["principal", "annual_rate", "years"]), _loan),
    ("book_hotel", "Book a hotel room.", _obj({
        "city": _s("City name."), "check_in": _s("Check-in date, YYYY-MM-DD."), "nights": _i("Number of nights."),
        "guests": _i("Number of guests.", default=2),
        "preferences": {**_obj({"breakfast": _b("Breakfast included.", default=False),
                                "pool": _b("Has a pool.", default=False)}, []), "description": "Room wishes."}},
        ["city", "check_in", "nights"]), _hotel),
    ("sort_numbers", "Sort a list of integers.", _obj({
        "numbers": _list("The numbers.", {"type": "integer"}),
        "descending": _b("Largest first.", default=False)}, ["numbers"]), _sort),
    ("create_contact", "Save a new contact.", _obj({
        "name": _s("Full name."), "phone": _s("Phone number."),
        "address": {**_obj({"city": _s("City."), "country": _s("Country.")}, ["city", "country"]), "description": "Home address."}},
        ["name", "phone"]), _contact),
    ("get_distance", "Get the distance between two cities.", _obj({
        "origin": _s("First city."), "destination": _s("Second city."),
        "unit": _s("Distance unit.", enum=["km", "miles"], default="km")}, ["origin", "destination"]), _distance),
    ("rate_movie", "Rate a movie.", _obj({
        "title": _s("Movie title."), "stars": _i("Rating, 1-5."), "review": _s("Short review.")}, ["title", "stars"]), _rate),
]
_BY_NAME = {name: (desc, params, gen) for name, desc, params, gen in CATALOG}
_TOOLS: dict[str, Tool] = {}


def _tool(name: str) -> Tool:
    """The catalog's tool ``name`` (built once: schema checks are not free)."""
    if name not in _TOOLS:
        desc, params, _ = _BY_NAME[name]
        _TOOLS[name] = Tool(name, desc, params, acknowledge(name))  # single turn: a call is never run
    return _TOOLS[name]


def gold_for(name: str, args: dict) -> dict:
    """The checker's gold form of a call: given values are required, the rest may be omitted or be
    their default; a nested object becomes a pattern dict the same way.

    Example:
        >>> gold_for("get_weather", {"city": "Paris"})
        {'get_weather': {'city': ['Paris'], 'unit': ['', 'celsius'], 'days': ['', 1]}}
    """
    return {name: _pattern(_BY_NAME[name][1], args)}


def _pattern(schema: dict, args: dict) -> dict:
    out = {}
    for param, spec in schema["properties"].items():
        if param in args:
            value = args[param]
            out[param] = [_pattern(spec, value)] if spec.get("type") == "object" else [value]
        else:
            out[param] = ["", spec["default"]] if "default" in spec else [""]
    return out


def _draw(variants: tuple[str, ...], split: str, index: int, attempt: int) -> tuple[str, list[dict], list[tuple[str, dict]], list[str], str]:
    """(request, gold, calls, tool names offered, variant) of a task, from its own RNG."""
    r = random.Random(f"pbsd/ToolCall-v0|{split}|{index}|{attempt}")
    variant = r.choice(variants)
    names = [n for n, *_ in CATALOG]
    if variant in ("single", "multiple"):
        needed = [r.choice(names)]
    elif r.random() < 0.5:
        needed = [r.choice(names)] * r.randint(2, 3)
    else:
        needed = r.sample(names, r.randint(2, 3))
    calls: list[tuple[str, dict]] = []
    texts: list[str] = []
    for name in needed:
        for _ in range(20):  # the same tool twice must get different arguments
            text, args = _BY_NAME[name][2](r)
            if (name, args) not in calls:
                break
        calls.append((name, args))
        texts.append(text)
    request = texts[0] if len(texts) == 1 else " ".join([texts[0]] + [f"Also: {t[0].lower()}{t[1:]}" for t in texts[1:]])
    gold = [gold_for(n, a) for n, a in calls]
    others = [n for n in names if n not in needed]
    n_distract = {"single": 0, "multiple": r.randint(2, 4), "parallel": r.randint(0, 2)}[variant]
    offered = list(dict.fromkeys(needed)) + r.sample(others, n_distract)
    r.shuffle(offered)
    return request, gold, calls, offered, variant


@functools.lru_cache(maxsize=None)
def task_splits(variants: tuple[str, ...], num_test_tasks: int) -> DisjointSplits:
    """The train/test splits of one setting (shared by its envs: the test keys are computed once)."""
    return DisjointSplits(functools.partial(_draw, variants), key=lambda d: [d[0], d[1]], test_size=num_test_tasks)


class ToolCallEnv(ChatToolEnv):
    """Procedural function calling (``pbsd/ToolCall-v0``): answer a short request with the right call(s).

    Single turn: the first assistant turn's calls are checked with the BFCL-style checker
    (:func:`~pbsd_agents.envs.checker.check_calls`); reward 1 when they match, else 0 (a turn with a
    call that cannot be parsed scores 0). ``info`` from the last step carries ``error_type`` and
    ``check_message``; ``info`` from ``reset`` carries ``variant``. The privileged context is the
    gold call text in ``tool_format``.

    Splits: ``test`` holds ``num_test_tasks`` fixed tasks; ``train`` is infinite (``num_tasks`` is
    None). Task ``i`` is drawn from its own RNG seeded by (split, i), so it never changes; a train draw
    whose (request, gold calls) equals a test task's is redrawn, so the splits are disjoint.

    Args:
        variants: which of ``single``, ``multiple``, ``parallel`` to draw from (uniformly).
        num_test_tasks: size of the test split.
        split, tool_format, ...: see :class:`~pbsd_agents.envs.base.ChatToolEnv`.

    Example:
        >>> import gymnasium, pbsd_agents
        >>> env = gymnasium.make("pbsd/ToolCall-v0", split="test", variants=("single",))
        >>> obs, info = env.reset(seed=0)
        >>> obs[1]["role"], info["variant"], len(info["tools"])
        ('user', 'single', 1)
        >>> action = env.unwrapped.oracle_actions()[0]
        >>> action.startswith("<tool_call>")
        True
        >>> _, reward, terminated, _, info = env.step(action)
        >>> reward, terminated, info["error_type"]
        (1.0, True, None)
    """

    single_turn = True

    def __init__(self, split: str = "train", variants: tuple[str, ...] | list[str] = VARIANTS,
                 num_test_tasks: int = 200, **kwargs: Any):
        super().__init__(split=split, **kwargs)
        if isinstance(variants, str):
            variants = (variants,)
        variants = tuple(variants)
        bad = [v for v in variants if v not in VARIANTS]
        if not variants or bad:
            raise ValueError(f"variants must be a non-empty subset of {list(VARIANTS)}, got {list(variants)!r}")
        if not isinstance(num_test_tasks, int) or isinstance(num_test_tasks, bool) or num_test_tasks < 1:
            raise ValueError(f"num_test_tasks must be a positive int, got {num_test_tasks!r}")
        self.variants = tuple(dict.fromkeys(variants))
        self.num_test_tasks = num_test_tasks
        self.num_tasks = num_test_tasks if split == "test" else None
        self._tasks = task_splits(self.variants, num_test_tasks)

    def make_task(self, index: int) -> Task:
        request, gold, calls, offered, variant = self._tasks.task(self.split, index)
        text = format_tool_calls(calls, self.tool_format)
        system = f"{SYSTEM_PROMPT} {format_hint(self.tool_format)}"
        return Task(
            task_id=f"toolcall-{self.split}-{index}",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": request}],
            privileged=text,
            oracle=[text],
            tools=[_tool(n) for n in offered],
            gold=gold,
            info={"variant": variant},
        )

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        if transcript.parse_errors:
            return 0.0, {"error_type": "parse_error", "check_message": transcript.parse_errors[0].message}
        schemas = [{"name": t.name, "parameters": _BY_NAME[t.name][1]} for t in self.task.tools]
        res = check_calls(transcript.calls, self.task.gold, schemas, _MODE[self.task.info["variant"]])
        return float(res.ok), {"error_type": res.error_type, "check_message": res.message}
