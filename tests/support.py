"""Shared pieces of the tests: reference data, tokenizers, tiny models, a toy multi-turn env, a scripted engine.

Imported as ``tests.support`` (pytest puts the repository root on ``sys.path``); ``conftest.py``
turns the data lookup into the ``shared_data`` fixture. Expensive objects are cached for the whole
pytest process.

The reference-data folder (public benchmark files, a real tokenizer) is not part of the repository:
it sits beside the checkout as ``../shared/data`` in the team's workspace and CI, or wherever
``PBSD_TEST_DATA`` points. A test that needs it is skipped, with a one-line reason naming the
missing path, when it is absent, so a fresh clone runs the suite with skips rather than failures.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import gymnasium
import pytest

from pbsd_agents.engines import Generation
from pbsd_agents.envs import ChatToolEnv, Task
from pbsd_agents.tools import Tool, format_tool_call

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PBSD_TEST_DATA", ROOT.parent / "shared" / "data"))
TOY_ENV_ID = "pbsd-test/Adder-v0"
BROKEN_CALL = '<tool_call>{"name": "add", "arguments": {"a": 1,</tool_call>'


def data_path(*parts: str) -> Path:
    """The path of ``parts`` under the reference-data folder, or skip the calling test when it is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs reference data {'/'.join(parts)} (not found under {DATA_DIR}; set PBSD_TEST_DATA)")
    return path


def qwen_dir() -> Path:
    """The real Qwen2.5-Instruct tokenizer folder (tool-calling template), or skip."""
    return data_path("tokenizers", "qwen2.5-instruct")


@functools.lru_cache(maxsize=None)
def _qwen(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def qwen_tokenizer():
    """The real Qwen2.5 tokenizer + tool-calling template (eos left as in its config: <|endoftext|>)."""
    return _qwen(str(qwen_dir()))


@functools.lru_cache(maxsize=None)
def byte_tok():
    from pbsd_agents.loading import byte_tokenizer

    return byte_tokenizer()


@functools.lru_cache(maxsize=None)
def renderer_for(name: str):
    from pbsd_agents.chat import ChatRenderer

    return ChatRenderer(qwen_tokenizer() if name == "qwen" else byte_tok())


def tokenizer_for(name: str):
    return qwen_tokenizer() if name == "qwen" else byte_tok()


@functools.lru_cache(maxsize=None)
def tiny_model(name: str = "byte", hidden: int = 32, layers: int = 1, mean_turn: float = 6.0, seed: int = 0):
    """A tiny random Qwen2 for the tokenizer ``name`` whose turns last about ``mean_turn`` tokens.
    Do not modify it (it is shared); build your own with build_tiny_model for that."""
    from pbsd_agents.loading import build_tiny_model

    r = renderer_for(name)
    return build_tiny_model(tokenizer_for(name), hidden_size=hidden, num_layers=layers, seed=seed,
                            eot_mean_length=mean_turn, eot_token=r.eot_token)


class AdderEnv(ChatToolEnv):
    """Toy multi-turn env: add a and b, add c to the sum (two calls), then say the total."""

    num_tasks = 50

    def make_task(self, index: int) -> Task:
        a, b, c = 3 + index, 10 + 2 * index, 100 + index
        add = Tool("add", "Add two integers.",
                   {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": False},
                   lambda a, b: f"result = {a + b}")
        total = a + b + c
        return Task(
            task_id=f"adder-{self.split}-{index}",
            messages=[{"role": "system", "content": "Use the add tool. Answer with the total."},
                      {"role": "user", "content": f"Task {index}: what is {a} + {b} + {c}?"}],
            privileged=f"SECRET-PLAN-{index}: add {a} and {b}, then add {c}; the total is {total}",
            oracle=[format_tool_call("add", {"a": a, "b": b}), format_tool_call("add", {"a": a + b, "b": c}),
                    f"The total is {total}."],
            tools=[add], gold=total,
        )

    def score(self, transcript):
        return float(str(self.task.gold) in transcript.final_text), {}


if TOY_ENV_ID not in gymnasium.registry:
    gymnasium.register(TOY_ENV_ID, entry_point=AdderEnv)

RELAY_ENV_ID = "pbsd-test/Relay-v0"


class RelayEnv(ChatToolEnv):
    """Toy env with per-turn privileged context: two user turns (add a and b; then add c to that),
    each ended by a reply without a call; the teacher learns each turn's call when that turn starts.
    ``leak=True`` makes a broken env that shows the second turn's note in the student's message."""

    num_tasks = 20

    def __init__(self, leak: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.leak = leak

    def _numbers(self, index):
        return 5 + index, 20 + index, 300 + index

    def make_task(self, index: int) -> Task:
        a, b, c = self._numbers(index)
        add = Tool("add", "Add two integers.",
                   {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": False},
                   lambda a, b: f"result = {a + b}")
        return Task(
            task_id=f"relay-{self.split}-{index}",
            messages=[{"role": "system", "content": "Use the add tool; say 'ok' when a request is done."},
                      {"role": "user", "content": f"Relay {index}: add {a} and {b}."}],
            privileged=f"TURN-1-PLAN-{index}: " + format_tool_call("add", {"a": a, "b": b}),
            oracle=[format_tool_call("add", {"a": a, "b": b}), "ok", format_tool_call("add", {"a": a + b, "b": c}), "ok"],
            tools=[add], gold=(a + b, a + b + c))

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        self._user_turn, self._results = 0, []
        return obs, info

    def step(self, action):
        self._turn += 1
        self.messages.append({"role": "assistant", "content": action})
        from pbsd_agents.tools.parsers import ParsedCall, parse_tool_calls

        results = parse_tool_calls(action, self.tool_format)
        info = {"tool_calls": [{"name": r.name, "arguments": r.arguments} for r in results if isinstance(r, ParsedCall)],
                "parse_errors": [], "num_parse_errors": 0, "turn": self._turn}
        if results:
            obs = self.run_calls(results)
            self._results += [m["content"] for m in obs]
            if self._turn >= self.max_turns:
                return self._end(info, 0.0, {}, terminated=False)
            self.messages.extend(obs)
            return obs, 0.0, False, False, info
        self._user_turn += 1
        if self._user_turn == 2:
            reward = float(f"result = {self.task.gold[1]}" in self._results)
            return self._end(info, reward, {"turn_passed": [f"result = {self.task.gold[0]}" in self._results, bool(reward)]},
                             terminated=True)
        a, b, c = self._numbers(int(self.task.task_id.rsplit("-", 1)[1]))
        note = "TURN-2-PLAN: " + format_tool_call("add", {"a": a + b, "b": c})
        obs = [{"role": "user", "content": f"Now add {c} to that." + (f" {note}" if self.leak else "")}]
        info["privileged"] = note
        self.messages.extend(obs)
        return obs, 0.0, False, False, info

    def score(self, transcript):  # the episode is scored in step()
        return 0.0, {}


if RELAY_ENV_ID not in gymnasium.registry:
    gymnasium.register(RELAY_ENV_ID, entry_point=RelayEnv)


class ScriptedEngine:
    """An engine that plays scripted assistant turns: ``script(prompt_text, turn) -> str or list[int]``.

    A str is encoded and closed with the end-of-turn token; a list of ids is used as given. Logprobs
    are a constant. Rows are cut at ``sampling.max_new_tokens`` (unfinished then). Every call is
    recorded in ``calls`` as ``(prompts, sampling, teacher)``.
    """

    def __init__(self, renderer, script, logprob: float = -0.25):
        self.renderer = renderer
        self.script = script
        self.logprob = logprob
        self.stop_ids = renderer.stop_ids
        self.calls = []
        self._marker = renderer.generation_prompt_ids()

    def turn_of(self, prompt: list[int]) -> int:
        m = self._marker
        return sum(1 for i in range(len(prompt) - len(m) + 1) if prompt[i:i + len(m)] == m) - 1

    def generate(self, prompts, sampling, teacher=False):
        self.calls.append(([list(p) for p in prompts], sampling, teacher))
        out = []
        for p in prompts:
            action = self.script(self.renderer.decode(p), self.turn_of(list(p)))
            ids = list(action) if isinstance(action, list) else self.renderer.encode(action) + [self.renderer.eot_id]
            finished = len(ids) <= sampling.max_new_tokens and ids[-1] in self.stop_ids
            ids = ids[: sampling.max_new_tokens]
            out.append(Generation(ids, [self.logprob] * len(ids), finished))
        return out


def oracle_script(env_id_or_cls, indices, *, faults=(), env_kwargs=None):
    """A script that plays each task's oracle turns (tasks recognised by their user message);
    ``faults``: task indices whose first turn is a malformed tool call instead."""
    env = env_id_or_cls(**(env_kwargs or {})) if isinstance(env_id_or_cls, type) else gymnasium.make(env_id_or_cls, **(env_kwargs or {}))
    table = []
    for i in sorted(set(indices)):
        obs, _ = env.reset(options={"index": i})
        user = [m["content"] for m in obs if m["role"] == "user"][0]
        table.append((user, list(env.unwrapped.oracle_actions()), i in faults))

    def script(text: str, turn: int):
        for user, oracle, faulty in table:
            if user in text:
                if faulty and turn == 0:
                    return BROKEN_CALL
                return oracle[min(turn - (1 if faulty else 0), len(oracle) - 1)]
        raise AssertionError("scripted engine: unknown task in prompt")

    return script


# ---- the bfcl-eval package (reference data and the leaderboard's own checkers) ---------------------


def bfcl_eval_or_skip():
    """The installed ``bfcl_eval`` package, or skip the calling test when it is absent."""
    return pytest.importorskip("bfcl_eval", reason="needs bfcl-eval (pip install --no-deps bfcl-eval==2026.3.23)")


@functools.lru_cache(maxsize=None)
def official_ast_checker():
    """The leaderboard's ``ast_checker`` and its ``Language`` enum.

    Its module imports the package's model registry, which imports API clients that a ``--no-deps``
    install lacks; the checker reads only ``underscore_to_dot`` from it, so a registry of two model
    names stands in: ``"plain"`` (names as written) and ``"under"`` (dots expected as underscores).
    """
    import sys
    import types

    bfcl_eval_or_skip()
    if "bfcl_eval.constants.model_config" not in sys.modules:
        registry = types.ModuleType("bfcl_eval.constants.model_config")
        registry.MODEL_CONFIG_MAPPING = {"plain": types.SimpleNamespace(underscore_to_dot=False),
                                         "under": types.SimpleNamespace(underscore_to_dot=True)}
        sys.modules["bfcl_eval.constants.model_config"] = registry
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    return ast_checker, Language.PYTHON


def official_multi_turn_checker():
    """The leaderboard's ``multi_turn_checker`` (it evaluates call strings: for tests only, never the env)."""
    bfcl_eval_or_skip()
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    return multi_turn_checker
