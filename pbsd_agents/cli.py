"""The ``pbsd-agents`` command line: a thin layer over the Python API, one function per subcommand.

    pbsd-agents envs                                   list the registered pbsd/ environments
    pbsd-agents rollout --env ID --model M --n N --out FILE.jsonl [--view student|teacher]

A subcommand is a pair ``(add_arguments(parser), run(args) -> exit code)`` registered in
:data:`SUBCOMMANDS`; errors a user can fix (an unknown env id, a missing model) are one line on
stderr and exit code 2.

Example:
    >>> main(["envs"])  # doctest: +ELLIPSIS
    pbsd/ToolCall-v0 ...
    0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

__all__ = ["CLIError", "SUBCOMMANDS", "build_parser", "main"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


# ---- envs --------------------------------------------------------------------------------------


def add_envs_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run_envs(args: argparse.Namespace) -> int:
    from .envs import ENVIRONMENTS

    width = max(len(k) for k in ENVIRONMENTS)
    for env_id, (_, description) in ENVIRONMENTS.items():
        print(f"{env_id:<{width}}  {description}")
    return 0


# ---- rollout -----------------------------------------------------------------------------------


def add_rollout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, metavar="ID", help="environment id, e.g. pbsd/ToolCall-v0 (see `pbsd-agents envs`)")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="'default' (the embedded tiny model), a preset (see pbsd_agents.presets), a model folder, or a Hugging Face hub id")
    p.add_argument("--n", type=int, default=16, help="number of trajectories (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="where to write the trajectories (JSON lines)")
    p.add_argument("--view", choices=("student", "teacher"), default="student",
                   help="generate from the student prompt, or from the teacher prompt with the teacher's weights (default: %(default)s)")
    p.add_argument("--split", default=None, help="task split passed to the env (train/test/...; default: the env's)")
    p.add_argument("--env-kwargs", default="{}", metavar="JSON", help="more env constructor arguments, as a JSON object")
    p.add_argument("--start", type=int, default=0, help="first task index; tasks start..start+n-1 (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1, help="samples per task (the n trajectories cover n/repeat tasks)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per assistant turn (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4096, help="token budget per trajectory, prompt excluded (default: %(default)s)")
    p.add_argument("--max-turns", type=int, default=None, help="assistant turns per episode (default: the env's limit)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="episodes generated together (default: %(default)s)")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="rollout engine; vllm is experimental (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1... (default: %(default)s)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--check", action="store_true", help="check the written file against the trajectory invariants (exit 1 if broken)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_rollout(args: argparse.Namespace) -> int:
    import gymnasium

    from .envs import ENVIRONMENTS

    if args.env not in gymnasium.registry:
        raise CLIError(f"unknown env {args.env!r}; valid choices: {', '.join(ENVIRONMENTS)}")
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
    try:  # make one env first: a bad env id or kwargs fails here, before the model loads
        probe = gymnasium.make(args.env, **env_kwargs)
    except (ImportError, TypeError, ValueError) as exc:
        raise CLIError(f"cannot make env {args.env!r} with {env_kwargs}: {exc}") from None
    num_tasks = probe.unwrapped.num_tasks
    probe.close()
    n_tasks = args.n // args.repeat
    if num_tasks is not None and args.start + n_tasks > num_tasks:
        raise CLIError(f"{args.env} has {num_tasks} tasks in this split; --start {args.start} + {n_tasks} tasks is too many")

    from .loading import load_policy
    from .rollout import Collector
    from .trajectory import save_jsonl

    t0 = time.time()
    try:
        # no training here, so the teacher's weights are the loaded ones: no frozen copy needed
        policy = load_policy(args.model, device=None if args.device == "auto" else args.device, dtype=args.dtype,
                             frozen_teacher=False)
    except (FileNotFoundError, ImportError, ValueError) as exc:  # ImportError: a preset's package is missing
        raise CLIError(str(exc).splitlines()[0]) from None
    collector = Collector.for_policy(policy, engine=args.engine, batch_size=args.batch_size, progress=not args.no_progress)
    tasks = [i for i in range(args.start, args.start + n_tasks) for _ in range(args.repeat)]
    t1 = time.time()
    trajs = collector.collect(args.env, tasks, view=args.view, temperature=args.temperature, seed=args.seed,
                              max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens,
                              max_turns=args.max_turns, env_kwargs=env_kwargs)
    t2 = time.time()
    save_jsonl(trajs, args.out)
    tokens = sum(t.num_action_tokens for t in trajs)
    n = len(trajs)
    print(f"wrote {n} {args.view} trajectories to {args.out}: success {sum(t.success for t in trajs) / n:.3f}, "
          f"mean reward {sum(t.reward for t in trajs) / n:.3f}, truncated {sum(t.truncated for t in trajs)}, "
          f"{tokens} generated tokens in {t2 - t1:.1f} s ({tokens / max(t2 - t1, 1e-9):.0f} tok/s; model load {t1 - t0:.1f} s)")
    if args.check:
        from .invariants import check_jsonl

        report = check_jsonl(args.out, collector.renderer, env_kwargs=env_kwargs)
        print(report.summary())
        return 0 if report.ok else 1
    return 0


# ---- wiring ------------------------------------------------------------------------------------

# name -> (one-line help, add_arguments, run); train/eval/export/plot come from cli_train.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "envs": ("list the registered pbsd/ environments", add_envs_arguments, run_envs),
    "rollout": ("collect trajectories with a model and write them as JSON lines", add_rollout_arguments, run_rollout),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbsd-agents",
        description="Train tool-using LLM agents by on-policy self-distillation (PBSD), and inspect their rollouts.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .cli_train import add_all

    add_all(sub)  # train, eval, export, plot
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args) or 0)
    except (CLIError, ValueError, FileExistsError, FileNotFoundError) as exc:
        # Bad input is one line naming what is wrong, not a traceback.
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        print(f"pbsd-agents {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pbsd-agents {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
