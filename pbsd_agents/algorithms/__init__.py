"""Learning algorithms behind one loss interface: PBSD (the kit's method), OPSD, GRPO and SFT.

Each is one file with a config dataclass, the equation in its docstring, ``plan()`` (what to
collect per task) and ``loss(batch, policy) -> (loss, metrics)``.
"""

from .base import Algorithm, Batch, CollectPlan, TaskGroup
from .grpo import GRPO, GRPOConfig
from .opsd import OPSD, OPSDConfig
from .pbsd import PBSD, PBSDConfig
from .sft import SFT, SFTConfig

ALGORITHMS = {"pbsd": (PBSD, PBSDConfig), "opsd": (OPSD, OPSDConfig), "grpo": (GRPO, GRPOConfig), "sft": (SFT, SFTConfig)}

__all__ = [
    "ALGORITHMS", "Algorithm", "Batch", "CollectPlan", "GRPO", "GRPOConfig", "OPSD", "OPSDConfig",
    "PBSD", "PBSDConfig", "SFT", "SFTConfig", "TaskGroup",
]
