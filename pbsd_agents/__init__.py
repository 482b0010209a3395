"""pbsd-agents: train tool-using LLM agents by on-policy self-distillation.

Importing the package registers the ``pbsd/`` environments with gymnasium. It does not import torch
or transformers; the modules that need them load them when used.
"""

from . import envs, tools  # noqa: F401  (registers the environments)

__version__ = "0.1.0"
