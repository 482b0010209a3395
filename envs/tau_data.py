"""Where tau-bench retail's files are: tau-bench's own layout (a clone of its repository) or a flat folder.

Two layouts are read, with the same result:

- **tau-bench's own** (``git clone https://github.com/sierra-research/tau-bench``): the clone's root or its
  ``tau_bench/envs/retail`` folder. The database is ``data/{orders,products,users}.json``, the policy
  ``wiki.md``, the tasks ``tasks_<split>.py`` and the tool schemas ``tools/*.py``. The Python files are
  parsed with ``ast``, never imported or executed: a task is a literal ``Task(...)`` call whose
  ``actions`` are literal ``Action(name=..., kwargs=...)`` calls; a tool schema is the literal dict
  its ``get_info`` returns.
- **flat**: one folder with ``orders.json``, ``products.json``, ``users.json``, ``policy_wiki.md``,
  ``tasks_<split>.json`` (a list of ``{"user_id", "instruction", "actions": [{"name", "kwargs"}],
  "outputs"}``) and optionally ``tools_schema.json`` (OpenAI function schemas).

Where a folder has no tool schemas on disk, the kit's own (:data:`~.tau_retail_db.TOOL_SPECS`) are used.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import Any

from .data import DataArg, read_json

DB_TABLES = ("orders", "products", "users")
RETAIL_IN_CLONE = os.path.join("tau_bench", "envs", "retail")
_DATA = DataArg("TauRetailEnv", "data_dir", "a clone of github.com/sierra-research/tau-bench (or its "
                "tau_bench/envs/retail folder), or a flat folder with orders.json, products.json, users.json, "
                "policy_wiki.md and tasks_<split>.json")


@dataclass(frozen=True)
class RetailFiles:
    """The files of one tau-bench retail data folder.

    Attributes:
        layout: ``"tau-bench"`` or ``"flat"``.
        root: the folder holding the files (for tau-bench's layout, its ``tau_bench/envs/retail``).
        tables: table name -> path of its JSON file.
        wiki: path of the policy (the agent's system prompt).
    """

    layout: str
    root: str
    tables: dict[str, str]
    wiki: str

    def tasks_path(self, split: str) -> str:
        return os.path.join(self.root, f"tasks_{split}.py" if self.layout == "tau-bench" else f"tasks_{split}.json")

    def splits(self) -> list[str]:
        ext = ".py" if self.layout == "tau-bench" else ".json"
        return sorted(f[len("tasks_"):-len(ext)] for f in os.listdir(self.root) if f.startswith("tasks_") and f.endswith(ext))


def locate(data_dir: Any) -> RetailFiles:
    """The layout of ``data_dir``; a one-line ``ValueError`` naming what is missing when it is neither."""
    if data_dir is None:
        raise _DATA.missing()
    path = os.path.expanduser(os.fspath(data_dir))
    if not os.path.isdir(path):
        raise _DATA.error(data_dir, "is not a folder")
    for root in (os.path.join(path, RETAIL_IN_CLONE), path):
        if os.path.isdir(os.path.join(root, "data")) and os.path.isfile(os.path.join(root, "wiki.md")):
            files = RetailFiles("tau-bench", root, {t: os.path.join(root, "data", f"{t}.json") for t in DB_TABLES},
                                os.path.join(root, "wiki.md"))
            break
    else:
        files = RetailFiles("flat", path, {t: os.path.join(path, f"{t}.json") for t in DB_TABLES},
                            os.path.join(path, "policy_wiki.md"))
        if not any(os.path.isfile(p) for p in files.tables.values()):
            raise _DATA.error(data_dir, "holds neither tau-bench's layout (tau_bench/envs/retail/ with data/ and "
                                        "wiki.md) nor the flat one (orders.json, ...)")
    missing = [os.path.relpath(p, path) for p in (*files.tables.values(), files.wiki) if not os.path.isfile(p)]
    if missing:
        raise _DATA.error(data_dir, f"lacks {missing} ({files.layout} layout)")
    return files


def load_tables(files: RetailFiles) -> dict[str, dict]:
    """The shared, read-only tables ``users``, ``orders``, ``products`` (cached per process)."""
    return {t: read_json(p) for t, p in files.tables.items()}


def load_tasks(files: RetailFiles, split: str, data_dir: Any) -> list[dict]:
    """The tasks of ``split`` as ``{"user_id", "instruction", "actions": [{"name", "kwargs"}], "outputs"}``."""
    path = files.tasks_path(split)
    if not os.path.isfile(path):
        raise _DATA.error(data_dir, f"has no tasks for split {split!r} (looked for {os.path.basename(path)}; "
                                    f"splits present: {files.splits() or 'none'})")
    if files.layout == "flat":
        raw = read_json(path)
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a JSON list of tasks")
        return [_check_task(t, f"{path}, task {i}") for i, t in enumerate(raw)]
    return read_python_tasks(path)


def read_python_tasks(path: str) -> list[dict]:
    """The ``Task(...)`` literals of a tau-bench ``tasks_<split>.py``, in file order, read with ``ast``.

    Example:
        >>> import tempfile
        >>> src = 'TASKS = [Task(user_id="u", instruction="hi", outputs=["5"],\\n' \\
        ...       '  actions=[Action(name="think", kwargs={"thought": "x"})])]'
        >>> with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        ...     _ = f.write(src)
        >>> read_python_tasks(f.name)
        [{'user_id': 'u', 'instruction': 'hi', 'actions': [{'name': 'think', 'kwargs': {'thought': 'x'}}], 'outputs': ['5']}]
    """
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
    lists = [node.value for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
             and isinstance(node.value, ast.List) and node.value.elts and all(_is_call(e, "Task") for e in node.value.elts)]
    if len(lists) != 1:
        raise ValueError(f"{path}: expected one list of Task(...) calls, found {len(lists)}")
    tasks = []
    for call in lists[0].elts:
        fields = _literal_fields(call, path, "Task")
        actions = call_kwargs(call).get("actions")
        if not isinstance(actions, ast.List) or not all(_is_call(a, "Action") for a in actions.elts):
            raise ValueError(f"{path}:{call.lineno}: Task(actions=...) must be a list of Action(...) calls")
        fields["actions"] = [_literal_fields(a, path, "Action") for a in actions.elts]
        tasks.append(_check_task(fields, f"{path}:{call.lineno}"))
    return tasks


def read_python_tool_schemas(tools_dir: str) -> dict[str, dict]:
    """Tool name -> OpenAI schema, from the literal dict each ``tools/*.py`` returns in ``get_info``
    (files whose ``get_info`` is not one literal are left out)."""
    schemas = {}
    for name in sorted(os.listdir(tools_dir)) if os.path.isdir(tools_dir) else []:
        if not name.endswith(".py") or name.startswith("_"):
            continue
        with open(os.path.join(tools_dir, name), encoding="utf-8") as f:
            try:
                tree = ast.parse(f.read())
            except SyntaxError:
                continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "get_info":
                returns = [n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None]
                try:
                    schema = ast.literal_eval(returns[0].value) if len(returns) == 1 else None
                except ValueError:
                    schema = None
                fn = schema.get("function") if isinstance(schema, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                    schemas[fn["name"]] = schema
    return schemas


def tool_schemas(files: RetailFiles) -> dict[str, dict]:
    """The tool schemas the folder has on disk, by name (empty when it has none)."""
    if files.layout == "tau-bench":
        return read_python_tool_schemas(os.path.join(files.root, "tools"))
    path = os.path.join(files.root, "tools_schema.json")
    if not os.path.isfile(path):
        return {}
    return {entry.get("function", entry)["name"]: entry for entry in read_json(path)}


def call_kwargs(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg is not None}


def _is_call(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name)


def _literal_fields(call: ast.Call, path: str, what: str) -> dict:
    if call.args or any(k.arg is None for k in call.keywords):
        raise ValueError(f"{path}:{call.lineno}: {what}(...) must use keyword arguments only")
    out = {}
    for key, node in call_kwargs(call).items():
        if key == "actions" and what == "Task":
            continue
        try:
            out[key] = ast.literal_eval(node)
        except ValueError:
            raise ValueError(f"{path}:{node.lineno}: {what}({key}=...) is not a literal") from None
    return out


def _check_task(task: Any, where: str) -> dict:
    if not isinstance(task, dict) or not isinstance(task.get("instruction"), str) or not isinstance(task.get("actions"), list):
        raise ValueError(f"{where}: a task needs a string 'instruction' and a list 'actions'")
    actions = []
    for a in task["actions"]:
        if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("kwargs", {}), dict):
            raise ValueError(f"{where}: an action is {{'name': str, 'kwargs': dict}}, got {a!r}"[:300])
        actions.append({"name": a["name"], "kwargs": a.get("kwargs", {})})
    outputs = task.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise ValueError(f"{where}: 'outputs' must be a list of strings")
    return {"user_id": task.get("user_id"), "instruction": task["instruction"], "actions": actions, "outputs": outputs}
