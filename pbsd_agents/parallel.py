"""Training on several processes: data parallel (DDP) or sharded (FSDP2), on ``torch.distributed``.

A run started by ``torchrun`` or ``accelerate launch`` (``WORLD_SIZE`` > 1 in the environment) joins
their process group: ``gloo`` on CPU, ``nccl`` on CUDA. A run started without a launcher is one
process and nothing here changes it. Every process (rank) collects its own share of a step's tasks
and computes its loss; then

- ``ddp``: each rank holds the whole policy; ``DistributedDataParallel`` averages the gradients in
  the backward pass and every rank takes the same optimizer step;
- ``fsdp``: ``fully_shard`` (FSDP2) splits the weights, gradients and AdamW state over the ranks
  (and the frozen teacher copy of full fine-tuning), gathering the full weights while a collection
  or a loss runs and reducing the gradients to each rank's shard after the backward pass.

The kit's rollout engine and scoring reach into the model's modules, so the whole policy is one
module here, :class:`_Unit`, whose forward runs a function: DDP prepares the gradient averaging when
it is called, FSDP gathers the weights for its duration. Every rank calls it the same number of
times per step (once to collect, once per micro-batch, once to evaluate), whatever its data: a rank
with nothing to learn from still runs a backward pass of a zero loss, so no collective waits forever.

Example (one process, no launcher):
    >>> p = Parallel()
    >>> p.rank, p.world_size, p.is_main, p.sum([2, 3.5])
    (0, 1, True, [2.0, 3.5])
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Callable

__all__ = ["MODES", "Parallel"]

MODES = ("auto", "ddp", "fsdp")


def _unit_class():
    import torch

    class _Unit(torch.nn.Module):
        """The student (and a frozen teacher copy) as one module whose forward runs ``fn``."""

        def __init__(self, student, teacher=None):
            super().__init__()
            self.student = student
            self.teacher = teacher

        def forward(self, fn):
            return fn()

    return _Unit


class Parallel:
    """The process group of a launched run, or one process when there is none.

    Args:
        mode: ``"ddp"`` or ``"fsdp"`` (used only when the launcher started several processes);
            ``"auto"``: ``fsdp`` when ``accelerate launch`` runs an FSDP config, else ``ddp``.
        timeout_s: how long a collective waits for a rank before the run fails (a rank that died).
    """

    def __init__(self, mode: str = "ddp", *, timeout_s: float = 600.0):
        if mode not in MODES:
            raise ValueError(f"unknown parallel mode {mode!r}; valid choices: {', '.join(MODES)}")
        if mode == "auto":
            mode = "fsdp" if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") else "ddp"
        self.mode = mode
        self.timeout_s = timeout_s
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if self.world_size > 1 else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.world_size > 1 else 0
        self.unit = None
        self._started = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: str) -> str:
        """Join the launcher's process group; returns the device this rank uses (``cuda:<local rank>`` on GPU)."""
        if not self.distributed or self._started:
            return device
        import torch
        import torch.distributed as dist

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=self.timeout_s))
        self._started = True
        return device

    def wrap(self, policy) -> None:
        """Put the policy's modules under DDP or FSDP (a no-op for one process). The optimizer must be
        built after this: FSDP replaces the parameters with shards."""
        if not self.distributed:
            return
        import torch

        unit = _unit_class()(policy.model, policy._teacher_copy)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            on_gpu = policy.device.type == "cuda"
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if on_gpu else MixedPrecisionPolicy()
            fully_shard(unit, mp_policy=mp)
            self.unit = unit
        else:
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            ids = [policy.device.index] if policy.device.type == "cuda" else None
            # Buffers never change in training; syncing them at every call would be one more collective.
            newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
            self.unit = DistributedDataParallel(unit, device_ids=ids, **sync)
        self._trainable = [p for p in policy.model.parameters() if p.requires_grad]

    # ---- running through the unit --------------------------------------------------------------

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` without gradients with the full weights in place (a collection, an evaluation)."""
        import torch

        with torch.no_grad():
            return fn() if self.unit is None else self.unit(fn)

    def loss(self, fn: Callable[[], tuple], *, sync: bool = True) -> tuple:
        """Run ``fn() -> (loss or None, metrics)`` for a backward pass; returns ``(to_backward, loss, metrics)``.

        ``to_backward`` is ``None`` for one process with nothing to learn. With several processes it is
        always a tensor: the loss (0 when there is none or it is not finite) plus zero times every
        trainable parameter, so every rank's backward pass takes part in the gradient reduction.
        ``sync=False`` (all micro-batches but the last) accumulates gradients without reducing them.
        """
        if self.unit is None:
            loss, metrics = fn()
            return loss, loss, metrics

        def with_anchor():
            import torch

            loss, metrics = fn()
            anchor = sum(p.sum() for p in self._unit_trainable()) * 0.0
            usable = loss is not None and bool(torch.isfinite(loss))
            return (loss + anchor if usable else anchor), loss, metrics

        with self._sync(sync):
            return self.unit(with_anchor)

    def _unit_trainable(self):
        # Inside the unit's forward FSDP has swapped in the gathered weights: read them from the modules.
        module = self.unit.module if hasattr(self.unit, "module") else self.unit
        return [p for p in module.student.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def _sync(self, sync: bool):
        if self.mode == "fsdp":
            self.unit.set_requires_gradient_sync(sync)
            yield
        else:
            with contextlib.nullcontext() if sync else self.unit.no_sync():
                yield

    def grad_norm(self, norm) -> float:
        """A norm returned by ``clip_grad_norm_`` as a number (FSDP returns it as a sharded tensor)."""
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    # ---- collectives on Python values ----------------------------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order (pickled between the run's own processes)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ---- checkpoint state ----------------------------------------------------------------------

    def full_model_state(self, model) -> dict | None:
        """The model's full state dict for rank 0 to save (``None``: the model saves its own)."""
        if self.mode != "fsdp" or not self.distributed:
            return None
        # Tied weights (one parameter, two names) stay one tensor: save_pretrained then writes it once.
        gathered: dict[int, Any] = {}
        out = {}
        for k, v in model.state_dict(keep_vars=True).items():
            if id(v) not in gathered:
                gathered[id(v)] = _full(v)
            out[k] = gathered[id(v)]
        return out

    def full_optimizer_state(self, optimizer) -> dict:
        """The optimizer's state dict with every shard gathered (the layout one process would save)."""
        sd = optimizer.state_dict()
        if self.mode != "fsdp" or not self.distributed:
            return sd
        state = {i: {k: _full(v) for k, v in s.items()} for i, s in sd["state"].items()}
        return {"state": state, "param_groups": sd["param_groups"]}

    def local_optimizer_state(self, optimizer, sd: dict) -> dict:
        """A saved (full) optimizer state dict cut to this rank's shards, ready for ``load_state_dict``."""
        if self.mode != "fsdp" or not self.distributed:
            return sd
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for g in optimizer.param_groups for p in g["params"]]
        state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            state[i] = {k: distribute_tensor(v, p.device_mesh, p.placements)
                        if isinstance(p, DTensor) and hasattr(v, "shape") and v.shape == p.shape else v
                        for k, v in s.items()}
        return {"state": state, "param_groups": sd["param_groups"]}

    def close(self, finished: bool = False) -> None:
        """Leave the process group. After a finished run every rank waits for the others first: a rank that
        tears its gloo connections down while a peer's last collective is still in flight can abort at exit
        ("terminate called without an active exception"). After an error there is no wait: a failed peer
        would never arrive."""
        if self._started:
            import torch.distributed as dist

            if dist.is_initialized():
                if finished:
                    dist.barrier()
                dist.destroy_process_group()
            self._started = False


def _full(value):
    """A sharded tensor gathered whole, on the CPU (a collective: every rank calls it in the same order)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return value.detach().cpu() if hasattr(value, "detach") else value
