"""Environments: the chat/tool-calling env contract and the registered ``pbsd/`` environments.

Importing this package registers every environment with gymnasium; it never imports torch.
"""

from gymnasium.envs.registration import register, registry

from .base import ChatToolEnv, Task, Transcript
from .spaces import ChatMessages, FreeText

# id -> (entry point, one-line description); `pbsd-agents envs` prints this table.
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "pbsd/ToolCall-v0": ("pbsd_agents.envs.toolcall:ToolCallEnv", "procedural function calling: single, multiple and parallel calls over 15+ typed tool schemas"),
    "pbsd/MathCalc-v0": ("pbsd_agents.envs.mathcalc:MathCalcEnv", "procedural multi-step arithmetic word problems with a calculator tool; answer in \\boxed{}"),
    "pbsd/Retail-v0": ("pbsd_agents.envs.retail:RetailEnv", "procedural stateful retail world (users, orders, products); goals need 2-5 dependent calls"),
    "pbsd/BFCL-v0": ("pbsd_agents.envs.bfcl:BFCLEnv", "Berkeley Function Calling Leaderboard, single turn: category= from the bfcl-eval package (or data_path=), AST checker"),
    "pbsd/BFCLMultiTurn-v0": ("pbsd_agents.envs.bfcl_multi_turn:BFCLMultiTurnEnv", "BFCL multi-turn (category=multi_turn_base|miss_func|miss_param|long_context) on the package's executable backends; per-turn privileged context"),
    "pbsd/GSM8K-v0": ("pbsd_agents.envs.gsm8k:GSM8KEnv", "GSM8K-format JSONL (data_path=) with an optional calculator tool"),
    "pbsd/MATH-v0": ("pbsd_agents.envs.math_problems:MATHEnv", "MATH / MATH-500-format JSONL or a Hub name (data_path=), graded by math-verify"),
    "pbsd/TauRetail-v0": ("pbsd_agents.envs.tau_retail:TauRetailEnv", "tau-bench retail as tau-bench scores it (data_dir= a tau-bench clone, split=train|dev|test)"),
}


def _register_all() -> None:
    for env_id, (entry_point, _) in ENVIRONMENTS.items():
        if env_id not in registry:  # importing twice (e.g. reload) must not warn
            # No max_episode_steps: the env owns its turn limit so `success` is always in the final info.
            register(id=env_id, entry_point=entry_point, disable_env_checker=False)


_register_all()

__all__ = ["ENVIRONMENTS", "ChatMessages", "ChatToolEnv", "FreeText", "Task", "Transcript"]
