"""The trainer: sample tasks → collect (or take demonstrations) → loss → AdamW step → evaluate → log and checkpoint.

``Trainer(TrainConfig(...)).train()`` is what ``pbsd-agents train`` runs. A run folder holds::

    runs/<name>/config.yaml  metrics.jsonl  eval.jsonl  curves.png  summary.json  checkpoints/step_XXXXXX/

Every step is reproducible from ``(seed, step)``: the tasks of step s and the sampling RNG are
seeded from them, so ``--resume`` after a kill continues exactly where the last checkpoint was.
Launched by ``torchrun`` or ``accelerate launch``, each process (rank) collects ``tasks_per_step`` of
the step's tasks (rank r takes the r-th share of the list drawn from ``(seed, step)``, and seeds its
sampling from ``(seed, step, rank)``), gradients are averaged (:mod:`~pbsd_agents.parallel`), and
rank 0 alone writes the run folder.
Evaluation lives in :mod:`~pbsd_agents.evaluation`, the checkpoint format in
:mod:`~pbsd_agents.checkpoint`, the run folder's logs in :mod:`~pbsd_agents.runlog`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from . import checkpoint
from .algorithms import ALGORITHMS, Batch, TaskGroup
from .config import DEFAULT_MODEL, RESUMABLE, TrainConfig
from .evaluation import Evaluation
from .parallel import Parallel
from .plotting import plot_run
from .runlog import RunLog

__all__ = ["DEFAULT_MODEL", "TrainConfig", "Trainer", "set_seed"]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# a lock and the trackers' folders alone: a start that failed before the run wrote anything
_LEFT_BY_A_FAILED_START = (".lock", "tensorboard", "wandb")


class Trainer:
    """Train a policy with one of the algorithms (see ``TrainConfig`` for every option).

    ``train()`` runs the whole job; ``setup()`` alone loads the policy, algorithm, collector and
    optimizer (for tools that inspect a step's batch with :meth:`collect_batch`).
    """

    def __init__(self, config: TrainConfig):
        config.validate()
        self.config = config
        self.parallel = Parallel(config.parallel)
        self.device = self.parallel.start(config.device)  # joins the launcher's process group, if any
        name = f"{config.algo}-{re.split('[/:]', config.env)[-1]}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.out = Path(self.parallel.broadcast(config.out or f"runs/{name}"))  # rank 0's clock names the run
        main = self.parallel.is_main
        if config.resume:
            saved = self.out / "config.yaml"
            if not saved.exists():
                raise FileNotFoundError(f"--resume: {self.out} holds no run to resume (no config.yaml there)")
            conflicts = config.resume_conflicts(yaml.safe_load(saved.read_text()) or {})
            if conflicts:
                raise ValueError(f"--resume: {'; '.join(conflicts)}; only {', '.join(RESUMABLE)} may change on resume")
        elif main and self.out.exists() and any(p.name not in _LEFT_BY_A_FAILED_START for p in self.out.iterdir()):
            raise FileExistsError(f"{self.out} exists; pass --resume to continue it or choose another --out")
        self.log = RunLog(self.out, progress=config.progress, report_to=config.report_to,
                         config=dataclasses.asdict(config), writer=main)

    def setup(self, restore: bool = False) -> bool:
        """Load everything; with ``restore``, from the newest checkpoint that loads (returns whether one did)."""
        from .envs.registry import count_tasks
        from .loading import CpuThreads, load_policy, resolve_device
        from .rollout import Collector

        cfg = self.config
        # The envs (and their data) first: a wrong id or data path fails before the model loads.
        self._num_train_tasks = count_tasks(cfg.env, **cfg.env_kwargs)
        self.evaluation = Evaluation(cfg.env, cfg.resolved_eval_env_kwargs(), num_tasks=cfg.eval_tasks, pass_k=cfg.pass_k,
                                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                     max_tokens=cfg.max_tokens, seed=cfg.seed)
        set_seed(cfg.seed)
        self.policy = load_policy(cfg.model, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, device=resolve_device(self.device))
        self.threads = CpuThreads(cfg.threads)
        algo_cls, _ = ALGORITHMS[cfg.algo]
        self.algorithm = algo_cls(cfg.algorithm_config(), pad_id=self.policy.tokenizer.pad_token_id or 0)
        self.collector = Collector.for_policy(self.policy, engine=cfg.engine, progress=False)
        self.collector.after_round = self.threads.update
        self.step = self.trajectories = self.tokens = self.skipped = 0
        saved = self._load_checkpoint() if restore else None  # weights first: sharding below splits them
        self.parallel.wrap(self.policy)
        if self.parallel.distributed:
            self.log.print(f"{self.parallel.world_size} processes, {self.parallel.mode}; {cfg.tasks_per_step} tasks per "
                           f"process per step ({cfg.tasks_per_step * self.parallel.world_size} in all)")
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = max(cfg.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.plan = self.algorithm.plan()
        # Other envs than the run's are made with their defaults: --env-arg belongs to the run's env.
        self._task_counts = {e: self._num_train_tasks if e == cfg.env else count_tasks(e)
                             for e in self.plan.demo_envs or (cfg.env,)}
        if saved is None:
            return False
        ckpt, training = saved
        state = checkpoint.apply_training_state(training, self.optimizer, self.scheduler,
                                                localize=lambda sd: self.parallel.local_optimizer_state(self.optimizer, sd))
        self.step, self.trajectories = state["step"], state["trajectories"]
        self.tokens, self.skipped = state["tokens"], state["skipped"]
        self.log.rewind(self.step)
        self.log.print(f"resumed from {ckpt} (step {self.step})")
        return True

    # ---- the loop ------------------------------------------------------------------------------

    def train(self) -> dict:
        finished = False
        try:
            summary = self._train()
            finished = True
            return summary
        finally:
            self.log.close()  # releases the folder's lock however the run ends
            self.parallel.close(finished)

    def _train(self) -> dict:
        cfg, log = self.config, self.log
        log.open()  # the folder is writable and ours before anything heavy starts
        if self.parallel.is_main:
            self._check_space()
        resumed = self.setup(restore=cfg.resume)
        if cfg.resume and not resumed:
            if any((self.out / "checkpoints").glob("step_*")):
                raise ValueError(f"--resume: no checkpoint in {self.out / 'checkpoints'} verifies and loads (reasons above); "
                                 "remove that folder to start the run over")
            log.print(f"no checkpoint in {self.out / 'checkpoints'}: the run starts over (its logs are cleared)")
            log.clear()
        if not resumed:
            log.write("config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        elif self.parallel.broadcast(self._budget_spent() and (self.out / "summary.json").exists()):
            log.print(f"{self.out} is finished (step {self.step}); nothing to do")
            return json.loads((self.out / "summary.json").read_text())
        t0 = time.time()
        # Rank 0 reads the logs; every rank must then agree on whether to evaluate (a collective).
        eval_before = self.parallel.broadcast(log.eval_at(0) if resumed else None)
        if eval_before is None:
            eval_before = self.evaluate()
            log.eval(eval_before)
        log.print(f"held-out success before training: {_fmt_eval(eval_before)}")
        t_train = time.time()
        bar = _progress(cfg.steps, log.progress and not cfg.max_trajectories, initial=self.step)  # rank 0 only
        last_eval = self.parallel.broadcast(log.eval_at(self.step) if resumed else None) or eval_before
        while not self._budget_spent():
            if cfg.max_wall_s and self.parallel.sum([time.time() - t_train > cfg.max_wall_s])[0]:
                log.print(f"stopping at step {self.step}: --max-wall-s {cfg.max_wall_s:g} reached")
                break
            row = self.train_step()
            log.metrics(row)
            if bar is not None:
                shown = ("loss", *self.algorithm.progress_metrics)
                bar.update(1)
                bar.set_postfix({k: f"{row[k]:.3g}" for k in shown if isinstance(row.get(k), float)})
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                last_eval = self.evaluate()
                log.eval(last_eval)
            if cfg.save_every and self.step % cfg.save_every == 0:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if last_eval["step"] != self.step:
            last_eval = self.evaluate()
            log.eval(last_eval)
        self.save_checkpoint()
        log.print(f"held-out success after {self.step} steps: {_fmt_eval(last_eval)}")
        return self._finish({"eval_before": eval_before, "eval_after": last_eval, "wall_s": round(time.time() - t0, 2),
                             "skipped_steps": self.skipped, "config": dataclasses.asdict(cfg)})

    def _check_space(self) -> None:
        """Fail now, not at the first checkpoint, when the run folder's disk cannot hold one: about the
        weights, plus AdamW's two moments for full fine-tuning (a hub model's size is not known here)."""
        import shutil

        from .presets import resolve_model

        try:
            src = Path(resolve_model(self.config.model).path)
        except (FileNotFoundError, ImportError, ValueError):
            return  # loading reports it
        weights = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin", "*.gguf") for f in src.glob(pattern)) \
            if src.is_dir() else 0
        need = weights // 10 if self.config.lora_r else 3 * weights  # an adapter is a small fraction of the weights
        free = shutil.disk_usage(self.out).free
        if need > free:
            raise OSError(f"{self.out}: {free / 1e6:.0f} MB free, a checkpoint needs about {need / 1e6:.0f} MB")

    def _budget_spent(self) -> bool:
        cfg = self.config
        return self.trajectories >= cfg.max_trajectories if cfg.max_trajectories else self.step >= cfg.steps

    def _finish(self, summary: dict) -> dict:
        self.log.write("summary.json", json.dumps(summary, indent=2))
        if not self.parallel.is_main:
            return summary
        try:
            plot_run(self.out)
        except Exception as exc:  # a plotting problem must not lose a finished run
            self.log.print(f"warning: could not draw curves.png: {exc}")
        self.log.print(f"run folder: {self.out}")
        return summary

    def _tasks_for_step(self, step: int) -> list[int]:
        """This rank's tasks: its share of the list drawn from ``(seed, step)`` (so one process with
        N x ``tasks_per_step`` tasks draws the same tasks as N ranks together)."""
        rng = np.random.default_rng([self.config.seed, step])
        high = self._num_train_tasks or 2**31
        n, rank = self.config.tasks_per_step, self.parallel.rank
        return [int(i) for i in rng.integers(high, size=n * self.parallel.world_size)[rank * n : (rank + 1) * n]]

    def train_step(self) -> dict:
        step = self.step + 1
        t0 = time.time()
        batch = self.parallel.run(lambda: self.collect_batch(step))
        t_collect = time.time() - t0
        new = batch.trajectories
        trajectories, tokens = self.parallel.sum([len(new), sum(t.num_tokens for t in new)])
        self.trajectories += int(trajectories)
        self.tokens += int(tokens)
        self.policy.model.train()
        t1 = time.time()
        loss_value, metrics, skipped = self._update(batch)
        self.step = step
        threads = self.threads.count  # the count the update used (collection rounds may have re-picked it)
        self.threads.update()
        self.algorithm.after_step(step, self.policy)
        row = {
            "step": step, "trajectories": self.trajectories, "tokens": self.tokens, "loss": loss_value,
            "wall_s": round(time.time() - t0, 3), "collect_s": round(t_collect, 3), "update_s": round(time.time() - t1, 3),
            "lr": self.scheduler.get_last_lr()[0], "skipped": skipped, "skipped_total": self.skipped, "threads": threads,
            **metrics,
        }
        for key, label in self.algorithm.printed_metrics.items():
            if key in row:
                self.log.print(f"step {step} {label}: {row[key]}")
        return row

    def collect_batch(self, step: int) -> Batch:
        """The step's tasks, collected as the algorithm's plan says (seeded by step: a rerun collects alike)."""
        cfg = self.config
        if self.plan.demonstrations:
            return self._demonstrations(step)
        torch.manual_seed(cfg.seed * 1_000_003 + step + 7_919 * self.parallel.rank)
        tasks = self._tasks_for_step(step)
        self.policy.model.eval()
        groups = [TaskGroup(index=i) for i in tasks]
        teacher_temp = cfg.temperature if self.plan.teacher_temperature is None else self.plan.teacher_temperature
        wanted = [(view, per_task, temp) for view, per_task, temp in (
            ("teacher", self.plan.teacher_samples, teacher_temp), ("student", self.plan.student_samples, cfg.temperature),
        ) if per_task]
        # views sampled alike are collected together: their episodes run in lockstep, one engine call a round
        for temp in dict.fromkeys(temp for _, _, temp in wanted):
            runs = [(view, per_task) for view, per_task, t in wanted if t == temp]
            trajs = self.collector.collect(
                cfg.env, [i for _, per_task in runs for i in tasks for _ in range(per_task)], env_kwargs=cfg.env_kwargs,
                view=[view for view, per_task in runs for _ in range(per_task * len(tasks))], temperature=temp,
                max_new_tokens=cfg.max_new_tokens, max_tokens=cfg.max_tokens)
            for view, per_task in runs:
                mine, trajs = trajs[: per_task * len(tasks)], trajs[per_task * len(tasks):]
                for g, k in zip(groups, range(0, len(mine), per_task)):
                    setattr(g, view, mine[k: k + per_task])
        return Batch(groups=groups, temperature=cfg.temperature, step=step)

    def _demonstrations(self, step: int) -> Batch:
        """The step's oracle demonstrations: task k from the plan's k-th env (in turn), shown in the teacher
        view with probability ``teacher_view_fraction``. Tasks and views are seeded by step; with one env
        the tasks are those of :meth:`_tasks_for_step`."""
        cfg = self.config
        envs = self.plan.demo_envs or (cfg.env,)
        rng, view_rng = np.random.default_rng([cfg.seed, step]), np.random.default_rng([cfg.seed, step, 1])
        n, world = cfg.tasks_per_step, self.parallel.world_size
        picks = [(env, int(rng.integers(self._task_counts[env] or 2**31)))
                 for env in (envs[k % len(envs)] for k in range(n * world))]
        views = ["teacher" if view_rng.random() < self.plan.teacher_view_fraction else "student" for _ in picks]
        share = slice(self.parallel.rank * n, (self.parallel.rank + 1) * n)  # this rank's share, as for sampled tasks
        picks, views = picks[share], views[share]
        groups = [TaskGroup(index=i) for _, i in picks]
        for env in dict.fromkeys(envs):
            mine = [k for k, (e, _) in enumerate(picks) if e == env]
            demos = self.collector.demonstrations(env, [picks[k][1] for k in mine], views=[views[k] for k in mine],
                                                  env_kwargs=cfg.env_kwargs if env == cfg.env else None)
            for k, demo in zip(mine, demos):
                getattr(groups[k], demo.source).append(demo)
        return Batch(groups=groups, temperature=cfg.temperature, step=step)

    def _update(self, batch: Batch) -> tuple[float | None, dict, bool]:
        """One optimizer step over the batch (split into ``grad_accum`` micro-batches; with several
        processes, every rank's micro-batches count as the step's, and their gradients are averaged)."""
        cfg, par = self.config, self.parallel
        self.optimizer.zero_grad(set_to_none=True)
        n = max(1, min(cfg.grad_accum, len(batch.groups)))
        parts = [Batch(groups=batch.groups[i::n], temperature=batch.temperature, step=batch.step) for i in range(n)]
        total, used, bad, metrics = 0.0, 0, 0, []
        for j, part in enumerate(parts):
            to_backward, loss, m = par.loss(lambda: self.algorithm.loss(part, self.policy), sync=j == n - 1)
            metrics.append(m)
            if loss is not None and not torch.isfinite(loss):
                bad += 1
                if not par.distributed:
                    break  # one process: nothing else to wait for
            elif loss is not None:
                used += 1
                total += loss.item() / n
            if to_backward is not None and (par.distributed or (loss is not None and torch.isfinite(loss))):
                (to_backward / n).backward()
        used, bad, total = par.sum([used, bad, total])
        combined = self.algorithm.combine_metrics([m for rank in par.gather(metrics) for m in rank])
        if bad:
            return self._skip(combined | {"nan_loss": 1})
        if not used:
            return self._skip(combined)
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        grad_norm = par.grad_norm(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        if not math.isfinite(grad_norm):
            return self._skip(combined | {"nan_grad": 1})
        self.optimizer.step()
        self.scheduler.step()
        weights_changed = getattr(self.collector.engine, "weights_changed", None)
        if weights_changed is not None:  # a sharded model's gathered weights keep their tensor versions
            weights_changed()
        return total / par.world_size, combined | {"grad_norm": grad_norm}, False

    def _skip(self, metrics: dict) -> tuple[None, dict, bool]:
        """A step with nothing to learn from, or a non-finite loss or gradient: no update, counted."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        return None, metrics, True

    # ---- evaluation and checkpoints ------------------------------------------------------------

    def evaluate(self) -> dict:
        """The held-out evaluation row (see :mod:`~pbsd_agents.evaluation`) at the current step."""
        self.policy.model.eval()
        row, _ = self.evaluation.run(self.collector, step=self.step, trajectories=self.trajectories, parallel=self.parallel)
        return row

    def save_checkpoint(self) -> Path:
        """Rank 0 writes the checkpoint; a sharded run gathers its weights and optimizer state first
        (so the folder is the same as one process's, and resumes with any number of processes)."""
        cfg = self.config
        model_state = self.parallel.full_model_state(self.policy.model)
        optimizer_state = self.parallel.full_optimizer_state(self.optimizer)
        path = self.out / "checkpoints" / f"step_{self.step:06d}"
        if self.parallel.is_main:
            state = {"step": self.step, "trajectories": self.trajectories, "tokens": self.tokens, "skipped": self.skipped,
                     "base_model": cfg.model, "lora_r": cfg.lora_r, "algo": cfg.algo, "env": cfg.env}
            path = checkpoint.save(self.out / "checkpoints", self.step, self.policy, self.optimizer, self.scheduler, state,
                                   keep_last=cfg.keep_last, model_state=model_state, optimizer_state=optimizer_state)
        return path

    def _load_checkpoint(self) -> tuple[Path, dict] | None:
        """Load the newest checkpoint that is valid and loads (newer ones are skipped, with the reason):
        its weights into the policy, the rest returned. Rank 0 chooses it; every rank loads it."""
        chosen = None
        if self.parallel.is_main:
            for ckpt in checkpoint.candidates(self.out / "checkpoints", on_skip=self.log.print):
                try:
                    chosen = (ckpt, checkpoint.load(ckpt, self.policy))
                    break
                except ValueError as exc:
                    self.log.print(f"skipping checkpoint {ckpt.name}: {exc}")
        path = self.parallel.broadcast(str(chosen[0]) if chosen else None)
        if path is not None and chosen is None:
            chosen = (Path(path), checkpoint.load(Path(path), self.policy))
        return chosen


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
