"""``pbsd-agents eval``: the trainer's held-out evaluation, on any model or checkpoint.

The result is printed as JSON with the keys of a run's ``eval.jsonl``. For a training checkpoint,
the env, its arguments, the number of tasks, pass@k, the token limits and the seed default to its
run's ``config.yaml``, so a run's final checkpoint is scored as the trainer scored it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..config import ENGINES, TrainConfig
from .common import CLIError, add_threads_flag, follow_threads, load_model, parse_kv, probe_env

HELP = "evaluate a model or checkpoint on held-out tasks"
DESCRIPTION = ("Greedy success (and with --pass-k, T=1 success and pass@k), each with a 95% interval, of a model or "
               "checkpoint on an environment's test split; broken down per category when the env reports one (with the "
               "leaderboard's overall scores for BFCL categories, also printed as a table on stderr). "
               "A checkpoint's run config supplies the defaults marked 'run's'.")
_D = TrainConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=_D.model, help="model id/path, training checkpoint folder, or 'default'")
    p.add_argument("--env", default=None, help=f"environment id (default: the run's, else {_D.env})")
    p.add_argument("--n", type=int, default=None, help="tasks, the first n of the split (default: the run's eval_tasks, else 100)")
    p.add_argument("--split", default=None, help="split to evaluate on (default: the run's eval split, else test)")
    p.add_argument("--env-arg", action="append", metavar="K=V", default=[],
                   help="env constructor argument, over the run's (repeatable)")
    p.add_argument("--pass-k", type=int, default=None,
                   help="also sample k per task at --temperature for pass@k (default: the run's pass_k, else 0)")
    p.add_argument("--temperature", type=float, default=None, help=f"sampling temperature (default: the run's, else {_D.temperature})")
    p.add_argument("--max-new-tokens", type=int, default=None, help=f"tokens per turn (default: the run's, else {_D.max_new_tokens})")
    p.add_argument("--max-tokens", type=int, default=None, help=f"tokens per trajectory (default: the run's, else {_D.max_tokens})")
    p.add_argument("--seed", type=int, default=None, help=f"sampling seed (default: the run's, else {_D.seed})")
    p.add_argument("--view", choices=("student", "teacher"), default="student", help="which prompt generates")
    p.add_argument("--engine", choices=ENGINES, default="hf",
                   help="rollout engine: hf (cached decoding), hf-generate (transformers generate, slower), vllm (experimental)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1...")
    add_threads_flag(p)
    p.add_argument("--out", default=None, metavar="FILE.jsonl", help="also write the greedy trajectories to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings(args: argparse.Namespace) -> dict:
    """The evaluation's settings: flags given, else the checkpoint run's config, else ``TrainConfig``'s defaults."""
    from .. import checkpoint

    run = checkpoint.run_config(args.model)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in (run or {}).items() if k in names})
    env = args.env or cfg.env
    # The run's env arguments belong to the run's env: another env starts from its own defaults.
    env_kwargs = cfg.resolved_eval_env_kwargs() if run and env == cfg.env else {"split": "test"}
    env_kwargs.update(parse_kv(args.env_arg, "--env-arg"))
    if args.split is not None:
        env_kwargs["split"] = args.split
    pick = lambda flag, field: getattr(cfg, field) if flag is None else flag  # noqa: E731
    return {"env": env, "env_kwargs": env_kwargs, "temperature": pick(args.temperature, "temperature"),
            "num_tasks": args.n if args.n is not None else (cfg.eval_tasks if run else 100),
            "pass_k": args.pass_k if args.pass_k is not None else (cfg.pass_k if run else 0),
            "max_new_tokens": pick(args.max_new_tokens, "max_new_tokens"),
            "max_tokens": pick(args.max_tokens, "max_tokens"), "seed": pick(args.seed, "seed")}


def run(args: argparse.Namespace) -> int:
    for name in ("n", "max_new_tokens", "max_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.pass_k is not None and args.pass_k < 0:
        raise CLIError(f"--pass-k must be >= 0, got {args.pass_k}")
    s = settings(args)
    probe_env(s["env"], s["env_kwargs"])

    from .. import checkpoint
    from ..evaluation import Evaluation, format_table
    from ..rollout import Collector
    from ..trajectory import save_jsonl

    state = checkpoint.read_state(args.model) if checkpoint.is_checkpoint(args.model) else {}
    evaluation = Evaluation(view=args.view, **s)
    policy = load_model(args.model, device=args.device, frozen_teacher=False)  # nothing trains: no frozen copy
    if args.view == "teacher" and policy.is_peft:
        # A LoRA policy's teacher is its base model (adapter off); the teacher view of a checkpoint is
        # its own weights with the privileged prompt, as for a fully fine-tuned one.
        from ..models import Policy

        policy = Policy(policy.model.merge_and_unload(), policy.tokenizer, renderer=policy.renderer, frozen_teacher=False)
    collector = Collector.for_policy(policy, engine=args.engine, progress=not args.no_progress)
    follow_threads(collector, args.threads)
    row, greedy = evaluation.run(collector, step=state.get("step", 0), trajectories=state.get("trajectories", 0))
    if args.out:
        save_jsonl(greedy, args.out)
    print(json.dumps(row, indent=2))
    print(format_table(row), file=sys.stderr)  # for people; stdout stays one JSON document
    return 0
