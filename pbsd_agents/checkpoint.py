"""Training checkpoints: the one module that knows their file layout.

A checkpoint is ``runs/<name>/checkpoints/step_XXXXXX/``::

    model*.safetensors + config.json      (full fine-tuning)  or  adapter_model.safetensors + adapter_config.json (LoRA)
    tokenizer files
    optimizer.pt  scheduler.pt  rng_state.pt  (Python, NumPy and torch RNG states)
    trainer_state.json                    (step, trajectories, tokens, skipped, base_model, lora_r, algo, env)

It is written to a temporary folder then renamed, so a kill leaves either the old or the complete
new checkpoint. The run's ``config.yaml`` is two levels up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

__all__ = ["export", "is_checkpoint", "latest", "load_any", "load_weights", "restore", "run_config", "save"]

STATE = "trainer_state.json"
TRAINING_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pt")  # not part of an exported model


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / STATE).exists()


def run_config(ckpt: str | Path) -> dict | None:
    """The ``config.yaml`` of the run a checkpoint belongs to (``None`` when it has none)."""
    import yaml

    path = Path(ckpt).resolve().parents[1] / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if is_checkpoint(ckpt) and path.exists() else None


def read_state(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / STATE).read_text())


def save(ckpt_dir: Path, step: int, policy, optimizer, scheduler, state: dict, keep_last: int = 2) -> Path:
    """Write ``ckpt_dir/step_XXXXXX`` atomically and keep only the last ``keep_last`` (at least 1)."""
    import numpy as np
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    policy.model.save_pretrained(tmp)
    if policy.tokenizer is not None:
        policy.tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()},
               tmp / "rng_state.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    kept = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
    for old in kept[: max(len(kept) - max(keep_last, 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``ckpt_dir``, or ``None``."""
    ckpts = sorted(p for p in Path(ckpt_dir).glob("step_*") if is_checkpoint(p))
    return ckpts[-1] if ckpts else None


def _torch_load(path: Path):
    import torch

    # Optimizer, scheduler and RNG states hold Python objects (NumPy arrays, tuples).
    return torch.load(path, weights_only=False)


def restore(ckpt: Path, policy, optimizer, scheduler) -> dict:
    """Load a checkpoint's weights, optimizer, scheduler and RNG states; return its trainer state."""
    import numpy as np
    import torch

    load_weights(policy.model, ckpt)
    optimizer.load_state_dict(_torch_load(ckpt / "optimizer.pt"))
    scheduler.load_state_dict(_torch_load(ckpt / "scheduler.pt"))
    rng = _torch_load(ckpt / "rng_state.pt")
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.random.set_rng_state(rng["torch"])
    return read_state(ckpt)


def load_weights(model, ckpt: Path) -> None:
    """Load a checkpoint's weights into ``model`` in place: the adapter of a peft model, else the full model."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        return
    state: dict = {}
    for f in sorted(ckpt.glob("model*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings are saved once; anything else missing means a wrong checkpoint.
    real_missing = [k for k in missing if "lm_head" not in k]
    if real_missing or unexpected:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {real_missing[:5]}, unexpected {unexpected[:5]}")


def load_any(model: str, *, device: str | None = "auto", dtype=None, frozen_teacher: bool = True):
    """A :class:`~pbsd_agents.models.Policy` from a model id/path, ``'default'``, or a training checkpoint.

    A LoRA checkpoint is loaded on its base model (named in its trainer state, else in its adapter config).
    """
    from .loading import load_policy

    path = Path(model)
    if not (path / "adapter_config.json").exists():
        return load_policy(model, device=device, dtype=dtype, frozen_teacher=frozen_teacher)
    from peft import PeftModel

    from .models import Policy

    base = read_state(path)["base_model"] if is_checkpoint(path) else json.loads(
        (path / "adapter_config.json").read_text())["base_model_name_or_path"]
    policy = load_policy(base, device=device, dtype=dtype, frozen_teacher=False)  # the base is the teacher
    return Policy(PeftModel.from_pretrained(policy.model, str(path)), policy.tokenizer, renderer=policy.renderer)


def export(ckpt: str | Path, out: str | Path, *, merge: bool = False) -> str:
    """Copy a checkpoint's model (or adapter) and tokenizer to ``out``; ``merge`` folds a LoRA adapter
    into its base model so plain transformers can load it. Returns a one-line report."""
    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_dir():
        raise ValueError(f"checkpoint folder not found: {ckpt}")
    is_adapter = (ckpt / "adapter_config.json").exists()
    if merge and is_adapter:
        policy = load_any(str(ckpt), device="cpu")
        policy.model.merge_and_unload().save_pretrained(out)
        policy.tokenizer.save_pretrained(out)
        return f"merged adapter into its base model: {out}"
    out.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if f.is_file() and f.name not in TRAINING_FILES:
            shutil.copy2(f, out / f.name)
    return f"exported {'adapter' if is_adapter else 'model'} to {out}"
