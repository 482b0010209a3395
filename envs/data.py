"""Where an env's tasks come from: data files (local or on the Hugging Face Hub) and procedural splits.

File-backed envs read a data argument through :class:`DataArg` (one error shape for a missing
argument, a missing file and an unreachable Hub), parse files with :func:`read_json` /
:func:`read_records` (cached per process until the file changes) and split one file into train and
test with :func:`holdout`, the one holdout rule. Procedural envs keep their train and test tasks
apart with :class:`DisjointSplits`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

T = TypeVar("T")

# owner/name, optionally /path/inside/it; a local path that does not exist may look the same.
_HUB_NAME = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<file>[\w./-]+))?")


@dataclass(frozen=True)
class DataArg:
    """A constructor argument naming data, and how its errors read: one line naming the value and
    what to pass instead.

    Example:
        >>> arg = DataArg("MyEnv", "data_path", "a JSONL file of tasks")
        >>> str(arg.missing())
        'MyEnv needs data_path=: a JSONL file of tasks'
        >>> str(arg.error("tasks.jsonl", "is not an existing file"))
        "data_path 'tasks.jsonl' is not an existing file; pass data_path= a JSONL file of tasks"
    """

    owner: str  # the env class
    param: str  # the argument's name
    expected: str  # what to pass, completing "pass <param>= ..."

    def missing(self) -> ValueError:
        return ValueError(f"{self.owner} needs {self.param}=: {self.expected}")

    def error(self, value: Any, problem: str) -> ValueError:
        return ValueError(f"{self.param} {str(value)!r} {problem}; pass {self.param}= {self.expected}")


def local_or_hub(arg: DataArg, value: Any) -> Path | tuple[str, str | None]:
    """``value`` as an existing local path, else as a Hugging Face name ``(repo id, file in it or None)``.

    Raises ``arg.missing()`` for ``None`` and ``arg.error`` when ``value`` is neither.

    Example:
        >>> local_or_hub(DataArg("E", "data_path", "a file"), "openai/gsm8k")
        ('openai/gsm8k', None)
    """
    if value is None:
        raise arg.missing()
    path = Path(os.fspath(value)).expanduser()
    if path.exists():
        return path
    match = _HUB_NAME.fullmatch(value) if isinstance(value, str) else None
    # "dir/file.json" or "./x" is a local path that is absent, not a Hub name
    if match is None or value.startswith((".", "/", "~")) or (match["file"] is None and path.suffix in (".json", ".jsonl")):
        raise arg.error(value, "is neither an existing file or folder nor a Hugging Face name")
    return match["repo"], match["file"]


def hub_file(arg: DataArg, value: Any, repo_id: str, filename: str) -> Path:
    """Download ``filename`` of the Hugging Face dataset ``repo_id`` (huggingface_hub caches it)."""
    return Path(_from_hub(arg, value, "huggingface_hub", lambda: _download(repo_id, filename)))


def hub_dataset(arg: DataArg, value: Any, name: str, config: str | None, split: str) -> list[dict]:
    """The rows of split ``split`` of the Hugging Face dataset ``name`` (the ``datasets`` package caches it)."""

    def load() -> list[dict]:
        import datasets  # optional and heavy: imported only when a Hub dataset is asked for

        return [dict(row) for row in datasets.load_dataset(name, config, split=split)]

    return _from_hub(arg, value, "datasets", load)


def _download(repo_id: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download  # optional: only for data named on the Hub

    return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset")


def _from_hub(arg: DataArg, value: Any, package: str, load: Callable[[], T]) -> T:
    try:
        return load()
    except ImportError as exc:
        if exc.name != package:
            raise
        raise arg.error(value, f"is not a local path, and loading it from the Hugging Face Hub needs {package} "
                               f"(pip install {package})") from None
    except Exception as exc:  # offline, unknown name, missing file: one line, not the Hub's traceback
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise arg.error(value, f"is not a local path, and loading it from the Hugging Face Hub failed: "
                               f"{type(exc).__name__}: {reason}") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``, parsed once per process until the file changes (shared: do not modify)."""
    return _read(path, "json")


def read_records(path: str | os.PathLike) -> list:
    """The records of a JSON Lines file (or of a JSON array), cached like :func:`read_json`.

    A line that is not JSON raises ``ValueError("<path>:<line>: not valid JSON: ...")``.
    """
    return _read(path, "records")


def _read(path: str | os.PathLike, kind: str) -> Any:
    path = os.path.realpath(os.fspath(path))
    stat = os.stat(path)
    return _parse(path, stat.st_mtime_ns, stat.st_size, kind)


@functools.lru_cache(maxsize=16)
def _parse(path: str, mtime_ns: int, size: int, kind: str) -> Any:
    # mtime and size are part of the key, so an edited file is read again
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    if kind == "json" or text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {exc}") from None
    return records


def holdout(records: Sequence[T], split: str, holdout_every: int | None) -> list[T]:
    """The records of ``split`` under the holdout rule every file-backed env uses.

    ``holdout_every=k``: the records at (1-based) positions k, 2k, 3k, ... are ``"test"`` and the others
    ``"train"`` (``k=1``: all of them are test). ``None``: the file already is the split asked for, so
    every record is used.

    Example:
        >>> holdout("abcdefghij", "test", 5), holdout("abcdefghij", "train", 5)
        (['e', 'j'], ['a', 'b', 'c', 'd', 'f', 'g', 'h', 'i'])
        >>> holdout("abc", "train", None)
        ['a', 'b', 'c']
    """
    check_holdout_every(holdout_every)
    if holdout_every is None:
        return list(records)
    if split not in ("train", "test"):
        raise ValueError(f"holdout_every splits a file into 'train' and 'test', not {split!r}")
    test = split == "test"
    return [r for i, r in enumerate(records, 1) if (i % holdout_every == 0) == test]


def split_records(arg: DataArg, value: Any, split: str, holdout_every: int | None, check: Callable[[Any, str], T], *,
                  hf_config: str | None = None, hf_split: str | None = None) -> list[T]:
    """The records of ``split`` from a local JSON/JSONL file or a Hugging Face dataset name.

    A file's records are split with :func:`holdout`; a hub dataset's split ``hf_split or split`` is
    taken as it is, unless ``hf_split`` is given (then it is held out like a file). ``check(record,
    where)`` validates each record (``where`` names it in errors) and returns what is kept.
    """
    check_holdout_every(holdout_every)
    found = local_or_hub(arg, value)
    if isinstance(found, tuple):
        name, inside = found
        if inside is not None:
            raise arg.error(value, "is not an existing file (nor a Hugging Face dataset name)")
        rows = hub_dataset(arg, value, name, hf_config, hf_split or split)
        records = [check(row, f"{name}[{hf_split or split}][{i}]") for i, row in enumerate(rows)]
        return holdout(records, split, holdout_every) if hf_split is not None else records
    if not found.is_file():
        raise arg.error(value, "is a folder, not a file")
    records = [check(r, f"{found}, record {i}") for i, r in enumerate(read_records(found), 1)]
    return holdout(records, split, holdout_every)


def check_holdout_every(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive int or None (see :func:`holdout`)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"holdout_every must be a positive int or None, got {value!r}")


class DisjointSplits(Generic[T]):
    """The train and test splits of a procedural env, which never share a task.

    Args:
        draw: ``draw(split, index, attempt)`` draws a task from its own seed (the same arguments, the same task).
        key: ``key(task)``: the JSON-able part that makes two tasks the same (e.g. request and gold calls).
        test_size: tasks in the test split.
        distinct_test: test task ``i`` is the ``i``-th draw of ``draw("test", 0, 0), draw("test", 1, 0), ...``
            whose key is new (no test task counted twice); otherwise it is ``draw("test", i, 0)``.

    Train task ``i`` is the first of ``draw("train", i, 0), draw("train", i, 1), ...`` whose key no test
    task has. The test keys are computed on first use and kept: share one instance per setting.

    Example:
        >>> splits = DisjointSplits(lambda split, i, attempt: (i + attempt) % 4 if split == "train" else i % 2,
        ...                         key=lambda task: task, test_size=2)
        >>> [splits.task("test", i) for i in range(2)], [splits.task("train", i) for i in range(4)]
        ([0, 1], [2, 2, 2, 3])
    """

    def __init__(self, draw: Callable[[str, int, int], T], key: Callable[[T], Any], test_size: int,
                 *, distinct_test: bool = False):
        self.draw, self.key, self.test_size, self.distinct_test = draw, key, test_size, distinct_test

    def fingerprint(self, task: T) -> Hashable:
        """What :meth:`test_keys` holds for ``task``."""
        return json.dumps(self.key(task), sort_keys=True)

    def task(self, split: str, index: int) -> T:
        """Task ``index`` of ``split`` (``"train"`` or ``"test"``)."""
        if split == "test":
            return self.draw("test", self._test[0][index] if self.distinct_test else index, 0)
        banned = self.test_keys()
        attempt = 0
        while True:
            task = self.draw("train", index, attempt)
            if self.fingerprint(task) not in banned:
                return task
            attempt += 1

    def test_keys(self) -> frozenset:
        """The fingerprints of the test tasks."""
        return self._test[1]

    @functools.cached_property
    def _test(self) -> tuple[list[int], frozenset]:
        seeds, keys, j = [], set(), 0
        while len(seeds) < self.test_size:
            fingerprint = self.fingerprint(self.draw("test", j, 0))
            if not (self.distinct_test and fingerprint in keys):
                seeds.append(j)
                keys.add(fingerprint)
            j += 1
        return seeds, frozenset(keys)
