"""Training checkpoints: the one module that knows their file layout.

A checkpoint is ``runs/<name>/checkpoints/step_XXXXXX/``::

    model*.safetensors + config.json      (full fine-tuning)  or  adapter_model.safetensors + adapter_config.json (LoRA)
    tokenizer files
    optimizer.pt  scheduler.pt  rng_state.pt  (Python, NumPy and torch RNG states)
    trainer_state.json                    (step, trajectories, tokens, skipped, base_model, lora_r, algo, env)
    manifest.json                         (the SHA-256 of every other file; written last)

It is written to a temporary folder then renamed, so a kill leaves either the old or the complete
new checkpoint; a write that fails removes its temporary folder, and folders left by killed writes
are removed by the next save. A checkpoint is valid only when its manifest matches every file
(complete and intact) and its state names its own step; :func:`latest` returns the newest valid one.

Loading never runs code: weights are safetensors, and the ``.pt`` files hold only tensors, numbers
and strings, read with ``torch.load(weights_only=True)`` (a pickle that would call anything is
refused). The run's ``config.yaml`` is two levels up.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["apply_training_state", "candidates", "export", "is_checkpoint", "latest", "load", "load_any", "load_weights", "run_config", "save", "verify"]

STATE = "trainer_state.json"
MANIFEST = "manifest.json"
TRAINING_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pt", MANIFEST)  # not part of an exported model
_COUNTERS = ("step", "trajectories", "tokens", "skipped")


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / STATE).exists()


def run_config(ckpt: str | Path) -> dict | None:
    """The ``config.yaml`` of the run a checkpoint belongs to (``None`` when it has none)."""
    import yaml

    path = Path(ckpt).resolve().parents[1] / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if is_checkpoint(ckpt) and path.exists() else None


def save(ckpt_dir: Path, step: int, policy, optimizer, scheduler, state: dict, keep_last: int = 2, *,
         model_state: dict | None = None, optimizer_state: dict | None = None) -> Path:
    """Write ``ckpt_dir/step_XXXXXX`` atomically and keep only the last ``keep_last`` (at least 1).

    Only older checkpoints are pruned, so a stray folder with a larger step never costs a valid one.
    ``model_state`` and ``optimizer_state`` replace the model's and the optimizer's own state dicts
    (a sharded run passes them gathered whole, so its checkpoint is the same as one process's).
    """
    import torch

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(".tmp-step_*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{step:06d}"
    final = ckpt_dir / name
    if final.exists() and verify(final) is None:  # this step is saved already (a resumed run that had finished)
        return final
    tmp = ckpt_dir / f".tmp-{name}-{os.getpid()}"
    try:
        tmp.mkdir()
        policy.model.save_pretrained(tmp, **({"state_dict": model_state} if model_state is not None else {}))
        if policy.tokenizer is not None:
            policy.tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng_state.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=2))
        files = sorted(f.name for f in tmp.iterdir() if f.is_file())
        (tmp / MANIFEST).write_text(json.dumps({"sha256": {f: _sha256(tmp / f) for f in files}}, indent=2))
    except OSError as exc:  # a full disk, a folder that became unwritable: no partial folder stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"could not write checkpoint {final}: {exc.strerror or exc}") from None
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    older = sorted((p for p in ckpt_dir.glob("step_*") if _step_of(p) is not None and _step_of(p) < step), key=_step_of)
    for old in older[: max(len(older) - (max(keep_last, 1) - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(ckpt: Path) -> str | None:
    """Why ``ckpt`` is not a valid checkpoint (incomplete, altered, inconsistent), or ``None`` when it is."""
    ckpt = Path(ckpt)
    try:
        sums = json.loads((ckpt / MANIFEST).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest.json (an incomplete write, or a checkpoint of an older version)"
    present = {f.name for f in ckpt.iterdir() if f.is_file()} - {MANIFEST}
    if not isinstance(sums, dict) or set(map(str, sums)) != present:
        return "its manifest does not list exactly the files in the folder"
    required = [STATE, "optimizer.pt", "scheduler.pt", "rng_state.pt"]
    if any(name not in present for name in required) or not any(n.endswith(".safetensors") for n in present):
        return "it lacks weights or training state"
    for name, digest in sums.items():
        path = ckpt / str(name)
        if "/" in str(name) or not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum (altered or truncated)"
    try:
        state = read_state(ckpt)
    except ValueError as exc:
        return str(exc)
    if state["step"] != _step_of(ckpt):
        return f"its trainer state says step {state['step']}, its folder name another"
    return None


def candidates(ckpt_dir: Path, on_skip: Callable[[str], None] | None = None) -> Iterator[Path]:
    """The valid checkpoints in ``ckpt_dir`` (see :func:`verify`), newest first; each folder passed
    over is reported to ``on_skip`` with the reason."""
    for ckpt in sorted((p for p in Path(ckpt_dir).glob("step_*") if _step_of(p) is not None), key=_step_of, reverse=True):
        problem = verify(ckpt)
        if problem is None:
            yield ckpt
        elif on_skip is not None:
            on_skip(f"skipping checkpoint {ckpt.name}: {problem}")


def latest(ckpt_dir: Path, on_skip: Callable[[str], None] | None = None) -> Path | None:
    """The newest valid checkpoint in ``ckpt_dir``, or ``None``."""
    return next(candidates(ckpt_dir, on_skip), None)


def load(ckpt: Path, policy) -> dict:
    """Read every file of a checkpoint, then load its weights into ``policy``; returns the rest
    (trainer state, optimizer, scheduler and RNG states) for :func:`apply_training_state`.

    A file that cannot be loaded is a ``ValueError`` raised before the policy changes.
    """
    import numpy as np

    ckpt = Path(ckpt)
    state = read_state(ckpt)
    weights = _read_weights(policy.model, ckpt)
    opt, sched, rng = (_torch_load(ckpt / name) for name in ("optimizer.pt", "scheduler.pt", "rng_state.pt"))
    try:
        version, internal, gauss = rng["python"]
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        python_state, numpy_state = (version, tuple(internal), gauss), (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
        torch_state = rng["torch"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{ckpt.name}/rng_state.pt is not an RNG state of this kit ({exc})") from None
    _apply_weights(policy.model, ckpt, weights)
    return {"state": state, "optimizer": opt, "scheduler": sched, "rng": (python_state, numpy_state, torch_state)}


def apply_training_state(training: dict, optimizer, scheduler, localize: Callable[[dict], dict] | None = None) -> dict:
    """Apply what :func:`load` returned to the optimizer, the scheduler and the RNGs; returns the trainer
    state. ``localize`` turns the saved optimizer state into this process's (its shards in a sharded run)."""
    import numpy as np
    import torch

    opt = training["optimizer"]
    optimizer.load_state_dict(localize(opt) if localize is not None else opt)
    scheduler.load_state_dict(training["scheduler"])
    python_state, numpy_state, torch_state = training["rng"]
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    torch.random.set_rng_state(torch_state)
    return training["state"]


def read_state(ckpt: str | Path) -> dict:
    """The trainer state of ``ckpt``; ``ValueError`` when it is not the kit's (counters must be ints >= 0)."""
    path = Path(ckpt) / STATE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable trainer state ({exc})") from None
    bad = [k for k in _COUNTERS if not isinstance(state.get(k), int) or isinstance(state.get(k), bool) or state[k] < 0]
    if bad:
        raise ValueError(f"{path}: {', '.join(bad)} must be non-negative integers")
    return state


def _step_of(path: Path) -> int | None:
    m = re.fullmatch(r"step_(\d+)", path.name)
    return int(m.group(1)) if m and path.is_dir() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors, numbers and lists only (loadable with weights_only)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.random.get_rng_state()}


def _torch_load(path: Path):
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001  (a crafted pickle, a truncated file, garbage: all refused alike)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(f"{path.parent.name}/{path.name} cannot be loaded as plain tensors and numbers "
                         f"({type(exc).__name__}: {reason})") from None


def load_weights(model, ckpt: Path) -> None:
    """Load a checkpoint's weights into ``model`` in place: the adapter of a peft model, else the full model."""
    _apply_weights(model, Path(ckpt), _read_weights(model, Path(ckpt)))


def _read_weights(model, ckpt: Path) -> dict:
    from safetensors.torch import load_file

    files = [ckpt / "adapter_model.safetensors"] if hasattr(model, "peft_config") else sorted(ckpt.glob("model*.safetensors"))
    state: dict = {}
    try:
        for f in files:
            state.update(load_file(str(f)))
    except Exception as exc:  # noqa: BLE001  (truncated or not safetensors)
        raise ValueError(f"{ckpt.name}: cannot read its weights ({type(exc).__name__}: {str(exc)[:160]})") from None
    return state


def _apply_weights(model, ckpt: Path, state: dict) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings are saved once; anything else missing means a wrong checkpoint.
    real_missing = [k for k in missing if "lm_head" not in k]
    if real_missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not match the model: missing {real_missing[:5]}, unexpected {unexpected[:5]}")


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
