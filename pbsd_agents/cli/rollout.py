"""``pbsd-agents rollout``: collect trajectories with a model and write them as JSON lines (or as a
Hugging Face dataset: ``--format parquet|hf``)."""

from __future__ import annotations

import argparse
import json
import time

from ..config import ENGINES
from .common import CLIError, add_threads_flag, follow_threads, load_model, probe_env

HELP = "collect trajectories with a model and write them as JSON lines (or a parquet or Hugging Face dataset)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, metavar="ID",
                   help="environment id: any gymnasium-registered id, e.g. pbsd/ToolCall-v0 or my_module:MyEnv-v0 "
                   "(see `pbsd-agents envs`)")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="'default' (the embedded tiny model), a preset (see pbsd_agents.presets), a model folder, "
                   "a training checkpoint, or a Hugging Face hub id")
    p.add_argument("--n", type=int, default=16, help="number of trajectories")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the trajectories: a file (jsonl, parquet) "
                   "or a folder (hf)")
    p.add_argument("--format", choices=("jsonl", "parquet", "hf"), default="jsonl",
                   help="jsonl: the kit's trajectory lines; parquet: one file, hf: a datasets.save_to_disk folder "
                   "(both with both views' input ids, action masks, rewards and messages; need the trl extra)")
    p.add_argument("--view", choices=("student", "teacher"), default="student",
                   help="generate from the student prompt, or from the teacher prompt with the teacher's weights")
    p.add_argument("--split", default=None, help="task split passed to the env (train/test/...; default: the env's)")
    p.add_argument("--env-kwargs", default="{}", metavar="JSON", help="more env constructor arguments, as a JSON object")
    p.add_argument("--start", type=int, default=0, help="first task index; tasks start..start+n-1")
    p.add_argument("--repeat", type=int, default=1, help="samples per task (the n trajectories cover n/repeat tasks)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per assistant turn")
    p.add_argument("--max-tokens", type=int, default=4096, help="token budget per trajectory, prompt excluded")
    p.add_argument("--max-turns", type=int, default=None, help="assistant turns per episode (default: the env's limit)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=32, help="episodes generated together")
    p.add_argument("--engine", choices=ENGINES, default="hf",
                   help="rollout engine: hf (cached decoding), hf-generate (transformers generate, slower), vllm (experimental)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1...")
    add_threads_flag(p)
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--check", action="store_true", help="check the written file against the trajectory invariants (exit 1 if broken)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    for name in ("n", "repeat", "max_new_tokens", "max_tokens", "batch_size"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n % args.repeat:
        raise CLIError(f"--n ({args.n}) must be a multiple of --repeat ({args.repeat})")
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--env-kwargs is not valid JSON: {exc}") from None
    if not isinstance(env_kwargs, dict):
        raise CLIError("--env-kwargs must be a JSON object")
    if args.split is not None:
        env_kwargs["split"] = args.split
    if args.format != "jsonl":
        if args.check:
            raise CLIError("--check reads JSON lines: use it with --format jsonl")
        from ..integrations import require

        try:
            require("datasets")
        except ImportError as exc:
            raise CLIError(str(exc)) from None
    num_tasks = probe_env(args.env, env_kwargs)
    n_tasks = args.n // args.repeat
    if num_tasks is not None and args.start + n_tasks > num_tasks:
        raise CLIError(f"{args.env} has {num_tasks} tasks in this split; --start {args.start} + {n_tasks} tasks is too many")

    from ..rollout import Collector
    from ..trajectory import save_jsonl

    t0 = time.time()
    # no training here, so the teacher's weights are the loaded ones: no frozen copy needed
    policy = load_model(args.model, device=args.device, dtype=args.dtype, frozen_teacher=False)
    collector = Collector.for_policy(policy, engine=args.engine, batch_size=args.batch_size, progress=not args.no_progress)
    follow_threads(collector, args.threads)
    tasks = [i for i in range(args.start, args.start + n_tasks) for _ in range(args.repeat)]
    t1 = time.time()
    pairs = collector.collect_with_conversations(
        args.env, tasks, view=args.view, temperature=args.temperature, seed=args.seed,
        max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens, max_turns=args.max_turns, env_kwargs=env_kwargs)
    trajs = [t for t, _ in pairs]
    t2 = time.time()
    if args.format == "jsonl":
        save_jsonl(trajs, args.out)
    else:
        from ..integrations.datasets import to_dataset

        if args.no_progress:
            import datasets

            datasets.disable_progress_bars()
        dataset = to_dataset(trajs, [c for _, c in pairs])
        if args.format == "parquet":
            dataset.to_parquet(args.out)
        else:
            dataset.save_to_disk(args.out)
    tokens = sum(t.num_action_tokens for t in trajs)
    n = len(trajs)
    print(f"wrote {n} {args.view} trajectories to {args.out}: success {sum(t.success for t in trajs) / n:.3f}, "
          f"mean reward {sum(t.reward for t in trajs) / n:.3f}, truncated {sum(t.truncated for t in trajs)}, "
          f"{tokens} generated tokens in {t2 - t1:.1f} s ({tokens / max(t2 - t1, 1e-9):.0f} tok/s; model load {t1 - t0:.1f} s)")
    if args.check:
        from ..invariants import check_jsonl

        report = check_jsonl(args.out, collector.renderer, env_kwargs=env_kwargs)
        print(report.summary())
        return 0 if report.ok else 1
    return 0
