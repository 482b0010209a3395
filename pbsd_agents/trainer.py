"""The trainer: sample tasks → collect → loss → AdamW step → evaluate → log and checkpoint.

``Trainer(TrainConfig(...)).train()`` is what ``pbsd-agents train`` runs. The run folder layout is
fixed in DESIGN.md (Outputs of a run)::

    runs/<name>/config.yaml  metrics.jsonl  eval.jsonl  curves.png  summary.json  checkpoints/step_XXXXXX/

Every step is reproducible from ``(seed, step)``: the tasks of step s and the sampling RNG are
seeded from them, so ``--resume`` after a kill continues exactly where the last checkpoint was.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .algorithms import ALGORITHMS, Batch, TaskGroup
from .plotting import plot_run, read_jsonl

DEFAULT_MODEL = "default"


@dataclass
class TrainConfig:
    """Everything a run needs; the YAML config file and the CLI flags both fill this one dataclass."""

    algo: str = "pbsd"
    algo_args: dict = field(default_factory=dict)  # fields of the algorithm's config (e.g. beta)
    env: str = "pbsd/MathCalc-v0"  # measured: the clearest 100-step PBSD gain with the embedded model
    env_kwargs: dict = field(default_factory=dict)
    eval_env_kwargs: dict = field(default_factory=dict)  # merged over env_kwargs, with split="test"
    model: str = DEFAULT_MODEL
    engine: str = "hf"
    lora_r: int = 0  # 0 = full fine-tuning (the teacher is then a frozen copy: one more copy of the weights)
    lora_alpha: int = 0  # 0 = 2 * lora_r
    steps: int = 100
    max_trajectories: int = 0  # budget in sampled trajectories (teacher samples count); 0 = use steps
    max_wall_s: float = 0.0  # stop after this many seconds of training (0 = no limit); the run still ends normally
    tasks_per_step: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 160  # per assistant turn (three parallel calls of the embedded model take ~130)
    max_tokens: int = 512  # per trajectory (prompt excluded); longer is cut and marked truncated
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 50  # steps; 0 = only before and after
    eval_tasks: int = 64
    pass_k: int = 4
    save_every: int = 50
    keep_last: int = 2
    out: str = ""  # default runs/<algo>-<env>-<time>
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    report_to: str = "none"  # or "tensorboard"
    progress: bool = True

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(cls.field_names())}")
        return cls(**d)

    def validate(self) -> None:
        from .envs import ENVIRONMENTS

        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algo {self.algo!r}; valid choices: {', '.join(ALGORITHMS)}")
        if self.env not in ENVIRONMENTS:
            import gymnasium

            if self.env not in gymnasium.registry:
                raise ValueError(f"unknown env {self.env!r}; registered pbsd envs: {', '.join(ENVIRONMENTS)}")
        if self.engine not in ("hf", "vllm"):
            raise ValueError(f"unknown engine {self.engine!r}; valid choices: hf, vllm")
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"report_to must be 'none' or 'tensorboard', got {self.report_to!r}")
        for name in ("steps", "tasks_per_step", "grad_accum", "max_new_tokens", "max_tokens", "eval_tasks", "pass_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.algorithm_config()  # rejects unknown algo_args

    def algorithm_config(self):
        cls = ALGORITHMS[self.algo][1]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.algo_args) - names)
        if unknown:
            raise ValueError(f"unknown {self.algo} option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**self.algo_args)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Train a policy with one of the algorithms (see ``TrainConfig`` for every option)."""

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config = config
        self.out = Path(config.out or f"runs/{config.algo}-{config.env.split('/')[-1]}-{time.strftime('%Y%m%d-%H%M%S')}")
        if self.out.exists() and any(self.out.iterdir()) and not config.resume:
            raise FileExistsError(f"{self.out} exists; pass --resume to continue it or choose another --out")

    # ---- setup ---------------------------------------------------------------------------------

    def _setup(self) -> None:
        from .loading import load_policy
        from .rollout import Collector

        cfg = self.config
        set_seed(cfg.seed)
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.policy = load_policy(cfg.model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, device=device)
        algo_cls, _ = ALGORITHMS[cfg.algo]
        pad_id = self.policy.tokenizer.pad_token_id or 0
        self.algorithm = algo_cls(cfg.algorithm_config(), pad_id=pad_id)
        self.collector = Collector.for_policy(self.policy, engine=cfg.engine, progress=False)
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(cfg.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.step = 0
        self.trajectories = 0
        self.tokens = 0
        self.skipped = 0
        self.plan = self.algorithm.plan()
        self.train_env_kwargs = dict(cfg.env_kwargs)
        self.eval_env_kwargs = {**cfg.env_kwargs, "split": "test", **cfg.eval_env_kwargs}
        self._num_train_tasks = self._count_tasks(self.train_env_kwargs)
        self._num_eval_tasks = self._count_tasks(self.eval_env_kwargs)

    def _count_tasks(self, kwargs: dict) -> int | None:
        import gymnasium

        env = gymnasium.make(self.config.env, **kwargs)
        n = env.unwrapped.num_tasks
        env.close()
        return n

    # ---- the loop ------------------------------------------------------------------------------

    def train(self) -> dict:
        cfg = self.config
        self._setup()
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = cfg.resume and self._restore()
        if not resumed:
            (self.out / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        writer = self._tensorboard()
        t0 = time.time()
        eval_before = self._read_eval_at(0) if resumed else None
        if eval_before is None:
            eval_before = self.evaluate()
            self._log("eval.jsonl", eval_before)
        self._print(f"held-out success before training: {_fmt_eval(eval_before)}")
        t_train = time.time()
        budget = cfg.max_trajectories or math.inf
        total = cfg.steps if not cfg.max_trajectories else None
        bar = _progress(total, cfg.progress and total is not None, initial=self.step)
        last_eval = eval_before
        while (cfg.max_trajectories and self.trajectories < budget) or (not cfg.max_trajectories and self.step < cfg.steps):
            if cfg.max_wall_s and time.time() - t_train > cfg.max_wall_s:
                self._print(f"stopping at step {self.step}: --max-wall-s {cfg.max_wall_s:g} reached")
                break
            row = self.train_step()
            self._log("metrics.jsonl", row)
            if writer:
                for k, v in row.items():
                    if isinstance(v, (int, float)):
                        writer.add_scalar(f"train/{k}", v, self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "margin", "student_reward") if isinstance(row.get(k), float)})
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                last_eval = self.evaluate()
                self._log("eval.jsonl", last_eval)
                if writer:
                    for k, v in last_eval.items():
                        writer.add_scalar(f"eval/{k}", v, self.step)
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if last_eval["step"] != self.step:
            last_eval = self.evaluate()
            self._log("eval.jsonl", last_eval)
        self.save_checkpoint(final=True)
        self._print(f"held-out success after {self.step} steps: {_fmt_eval(last_eval)}")
        summary = {
            "eval_before": eval_before,
            "eval_after": last_eval,
            "wall_s": round(time.time() - t0, 2),
            "skipped_steps": self.skipped,
            "config": dataclasses.asdict(cfg),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            plot_run(self.out)
        except Exception as exc:  # a plotting problem must not lose a finished run
            self._print(f"warning: could not draw curves.png: {exc}")
        if writer:
            writer.close()
        self._print(f"run folder: {self.out}")
        return summary

    def _tasks_for_step(self, step: int) -> list[int]:
        rng = np.random.default_rng([self.config.seed, step])
        high = self._num_train_tasks or 2**31
        return [int(i) for i in rng.integers(high, size=self.config.tasks_per_step)]

    def train_step(self) -> dict:
        cfg = self.config
        step = self.step + 1
        t0 = time.time()
        batch = self.collect_batch(step)
        t_collect = time.time() - t0
        new = batch.trajectories
        self.trajectories += len(new)
        self.tokens += sum(t.num_tokens for t in new)
        self.policy.model.train()
        t1 = time.time()
        loss_value, metrics, skipped = self._update(batch)
        self.step = step
        self.algorithm.after_step(step, self.policy)
        row = {
            "step": step,
            "trajectories": self.trajectories,
            "tokens": self.tokens,
            "loss": loss_value,
            "wall_s": round(time.time() - t0, 3),
            "collect_s": round(t_collect, 3),
            "update_s": round(time.time() - t1, 3),
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": skipped,
            "skipped_total": self.skipped,
            **metrics,
        }
        if "gap_tokens" in row:
            self._print(f"step {step} largest per-token gaps in a pair: {row['gap_tokens']}")
        return row

    def collect_batch(self, step: int) -> Batch:
        """The step's tasks, collected as the algorithm's plan says (seeded by step: a rerun collects alike)."""
        cfg = self.config
        torch.manual_seed(cfg.seed * 1_000_003 + step)
        tasks = self._tasks_for_step(step)
        self.policy.model.eval()
        groups = [TaskGroup(index=i) for i in tasks]
        if self.plan.teacher_samples:
            temp = cfg.temperature if self.plan.teacher_temperature is None else self.plan.teacher_temperature
            trajs = self._collect(tasks, self.plan.teacher_samples, "teacher", temp, self.train_env_kwargs)
            for g, chunk in zip(groups, _chunks(trajs, self.plan.teacher_samples)):
                g.teacher = chunk
        if self.plan.student_samples:
            trajs = self._collect(tasks, self.plan.student_samples, "student", cfg.temperature, self.train_env_kwargs)
            for g, chunk in zip(groups, _chunks(trajs, self.plan.student_samples)):
                g.student = chunk
        return Batch(groups=groups, temperature=cfg.temperature, step=step)

    def _update(self, batch: Batch) -> tuple[float | None, dict, bool]:
        """One optimizer step over the batch (split into ``grad_accum`` micro-batches)."""
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        parts = _split_groups(batch, cfg.grad_accum)
        total, metrics, used = 0.0, {}, 0
        for part in parts:
            loss, m = self.algorithm.loss(part, self.policy)
            for k, v in m.items():
                metrics.setdefault(k, []).append(v)
            if loss is None:
                continue
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped += 1
                return None, _avg(metrics) | {"nan_loss": 1}, True
            (loss / len(parts)).backward()
            total += loss.item() / len(parts)
            used += 1
        if not used:
            self.skipped += 1
            return None, _avg(metrics), True
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            return None, _avg(metrics) | {"nan_grad": 1}, True
        self.optimizer.step()
        self.scheduler.step()
        return total, _avg(metrics) | {"grad_norm": grad_norm.item()}, False

    def _collect(self, tasks: list[int], per_task: int, view: str, temperature: float, env_kwargs: dict):
        cfg = self.config
        indices = [i for i in tasks for _ in range(per_task)]
        return self.collector.collect(
            cfg.env, indices, env_kwargs=env_kwargs, view=view, temperature=temperature,
            max_new_tokens=cfg.max_new_tokens, max_tokens=cfg.max_tokens,
        )

    # ---- evaluation ----------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Greedy success@1, T=1 success, pass@k, mean action tokens, parse-error rate on held-out tasks."""
        cfg = self.config
        n = cfg.eval_tasks if self._num_eval_tasks is None else min(cfg.eval_tasks, self._num_eval_tasks)
        tasks = list(range(n))
        self.policy.model.eval()
        state = torch.random.get_rng_state()
        torch.manual_seed(cfg.seed + 7919)  # the same eval samples whenever the weights are the same
        greedy = self._collect(tasks, 1, "student", 0.0, self.eval_env_kwargs)
        sampled = self._collect(tasks, cfg.pass_k, "student", cfg.temperature, self.eval_env_kwargs) if cfg.pass_k else []
        torch.random.set_rng_state(state)
        turns = sum(t.turns for t in greedy) or 1
        by_task = _chunks(sampled, cfg.pass_k) if sampled else []
        return {
            "step": self.step,
            "trajectories": self.trajectories,
            "success": _mean([t.success for t in greedy]),
            "success_t1": _mean([t.success for t in sampled]) if sampled else None,
            "pass_at_k": _mean([any(t.success for t in g) for g in by_task]) if sampled else None,
            "k": cfg.pass_k,
            "mean_action_tokens": _mean([t.num_action_tokens for t in greedy]),
            "parse_error_rate": sum(t.num_parse_errors for t in greedy) / turns,
            "num_tasks": n,
        }

    # ---- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self, final: bool = False) -> Path:
        ckpt_dir = self.out / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        name = f"step_{self.step:06d}"
        final_path = ckpt_dir / name
        tmp = ckpt_dir / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        self.policy.model.save_pretrained(tmp)
        if self.policy.tokenizer is not None:
            self.policy.tokenizer.save_pretrained(tmp)
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(
            {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()},
            tmp / "rng_state.pt",
        )
        state = {
            "step": self.step, "trajectories": self.trajectories, "tokens": self.tokens, "skipped": self.skipped,
            "base_model": self.config.model, "lora_r": self.config.lora_r, "algo": self.config.algo, "env": self.config.env,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final_path.exists():
            shutil.rmtree(final_path)
        tmp.rename(final_path)  # atomic: a kill leaves either the old or the complete new checkpoint
        kept = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
        for old in kept[: max(len(kept) - max(self.config.keep_last, 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
        return final_path

    def _restore(self) -> bool:
        ckpts = sorted(p for p in (self.out / "checkpoints").glob("step_*") if (p / "trainer_state.json").exists())
        if not ckpts:
            return False
        ckpt = ckpts[-1]
        state = json.loads((ckpt / "trainer_state.json").read_text())
        _load_weights(self.policy.model, ckpt)
        self.optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
        rng = torch.load(ckpt / "rng_state.pt", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.random.set_rng_state(rng["torch"])
        self.step, self.trajectories = state["step"], state["trajectories"]
        self.tokens, self.skipped = state["tokens"], state["skipped"]
        # Drop log lines written after the checkpoint, so the files read as one uninterrupted run.
        for name in ("metrics.jsonl", "eval.jsonl"):
            rows = [r for r in read_jsonl(self.out / name) if r.get("step", 0) <= self.step]
            if name == "eval.jsonl":
                rows = _dedupe_eval(rows)
            (self.out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._print(f"resumed from {ckpt} (step {self.step})")
        return True

    def _read_eval_at(self, step: int) -> dict | None:
        for row in read_jsonl(self.out / "eval.jsonl"):
            if row.get("step") == step:
                return row
        return None

    # ---- small helpers -------------------------------------------------------------------------

    def _log(self, name: str, row: dict) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")

    def _print(self, msg: str) -> None:
        if self.config.progress:
            print(msg, file=sys.stderr, flush=True)

    def _tensorboard(self):
        if self.config.report_to != "tensorboard":
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError("--report-to tensorboard needs the tensorboard package: pip install 'pbsd-agents[tensorboard]'") from None
        return SummaryWriter(str(self.out / "tensorboard"))


def _load_weights(model, ckpt: Path) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        return
    from safetensors.torch import load_file

    files = sorted(ckpt.glob("model*.safetensors"))
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings are saved once; anything else missing means a wrong checkpoint.
    real_missing = [k for k in missing if "lm_head" not in k]
    if real_missing or unexpected:
        raise RuntimeError(f"checkpoint {ckpt} does not match the model: missing {real_missing[:5]}, unexpected {unexpected[:5]}")


def _dedupe_eval(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        if r["step"] not in seen:
            seen.add(r["step"])
            out.append(r)
    return out


def _split_groups(batch: Batch, parts: int) -> list[Batch]:
    parts = max(1, min(parts, len(batch.groups)))
    return [Batch(groups=batch.groups[i::parts], temperature=batch.temperature, step=batch.step) for i in range(parts)]


def _chunks(xs: list, n: int) -> list[list]:
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def _avg(metrics: dict[str, list]) -> dict:
    out = {}
    for k, vs in metrics.items():
        nums = [v for v in vs if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if nums and len(nums) == len(vs):
            out[k] = sum(nums) / len(nums) if k not in ("num_pairs", "identical_pairs", "num_used") else sum(nums)
        elif vs:
            out[k] = vs[0]
    return out


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else 0.0


def _fmt_eval(e: dict) -> str:
    parts = [f"greedy {e['success']:.3f}"]
    if e.get("success_t1") is not None:
        parts.append(f"T=1 {e['success_t1']:.3f}")
    if e.get("pass_at_k") is not None:
        parts.append(f"pass@{e['k']} {e['pass_at_k']:.3f}")
    parts.append(f"({e['num_tasks']} tasks)")
    return ", ".join(parts)


def _progress(total, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)
