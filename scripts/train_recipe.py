"""Run a training recipe from scripts/recipes/ (a YAML TrainConfig), with any `pbsd-agents train` flags on top.

    python scripts/train_recipe.py toolcall --steps 3                      # CPU, SmolLM2-135M preset + LoRA
    python scripts/train_recipe.py gsm8k --env-arg data_path=PATH/train.jsonl --model Qwen/Qwen2.5-0.5B-Instruct --device cuda --engine vllm

Recipes: toolcall, mathcalc, retail (procedural), bfcl, gsm8k, tau_retail (benchmark files: give
yours with --env-arg, as each recipe's header says).
"""

import sys
from pathlib import Path

from pbsd_agents.cli import main

RECIPES = Path(__file__).resolve().parent / "recipes"

if __name__ == "__main__":
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        print("available recipes:", ", ".join(names))
        sys.exit(0)
    name, rest = sys.argv[1], sys.argv[2:]
    if name not in names:
        sys.exit(f"unknown recipe {name!r}; available: {', '.join(names)}")
    sys.exit(main(["train", "--config", str(RECIPES / f"{name}.yaml"), *rest]))
