"""The ``train``, ``eval``, ``export`` and ``plot`` subcommands (wired into :mod:`pbsd_agents.cli`).

Flags and the YAML config fill the same :class:`~pbsd_agents.trainer.TrainConfig`; precedence is
defaults < ``--config`` file < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import yaml

HELP = {
    "algo": "learning algorithm: pbsd (the kit's method), opsd, grpo or sft",
    "env": "environment id (see `pbsd-agents envs`)",
    "model": "Hugging Face model id or local path, a checkpoint folder, or 'default' (the embedded tiny model)",
    "engine": "rollout engine: hf (transformers generate, CPU or GPU) or vllm (GPU, experimental)",
    "lora_r": "LoRA rank; 0 = full fine-tuning, which keeps a frozen copy of the initial weights as the "
    "teacher (one more copy of the model in memory: ~2 bytes/param in bf16, 4 in fp32)",
    "lora_alpha": "LoRA alpha (0 = 2 x rank)",
    "steps": "optimizer steps (ignored when --max-trajectories is set)",
    "max_trajectories": "budget in sampled trajectories, teacher samples included (0 = use --steps)",
    "max_wall_s": "stop training after this many seconds (0 = no limit); evaluation and the final checkpoint still run",
    "tasks_per_step": "tasks sampled per step",
    "temperature": "student sampling temperature (the teacher's too unless the algorithm overrides it)",
    "max_new_tokens": "tokens per assistant turn",
    "max_tokens": "tokens per trajectory after the prompt; longer episodes are cut and marked truncated",
    "lr": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "warmup_steps": "linear learning-rate warm-up steps",
    "grad_clip": "gradient norm clip (0 = none)",
    "grad_accum": "micro-batches per optimizer step (tasks are split between them)",
    "eval_every": "steps between held-out evaluations (0 = only before and after)",
    "eval_tasks": "held-out tasks per evaluation",
    "pass_k": "samples per task at the student temperature for pass@k and T=1 success",
    "save_every": "steps between checkpoints (0 = only the final one)",
    "keep_last": "checkpoints kept",
    "out": "run folder (default runs/<algo>-<env>-<time>); an existing one needs --resume",
    "resume": "continue the run in --out from its last checkpoint, with its config.yaml",
    "seed": "random seed (tasks and sampling of every step derive from it)",
    "device": "auto, cpu or cuda",
    "report_to": "also log to: none or tensorboard",
    "progress": "show progress bars and messages",
}
DICT_FLAGS = {"algo_args": "--algo-arg", "env_kwargs": "--env-arg", "eval_env_kwargs": "--eval-env-arg"}


def _parse_kv(items: list[str], flag: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def add_train_parser(sub) -> None:
    from .trainer import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a policy (PBSD by default); every flag has a default",
        description="Train a policy. `pbsd-agents train` alone runs the main job: PBSD with the embedded "
        "tiny model on the default environment, held-out success printed before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in DICT_FLAGS:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=HELP.get(f.name, "") + f" (default: {default})")
        else:
            p.add_argument(flag, type=type(default), default=argparse.SUPPRESS, metavar=type(default).__name__.upper(),
                           help=HELP.get(f.name, "") + f" (default: {default!r})")
    p.add_argument("--algo-arg", action="append", metavar="K=V", default=argparse.SUPPRESS,
                   help="an option of the algorithm's config, e.g. beta=0.1, pair_filter=verifier, nll_coef=0.5 (repeatable)")
    p.add_argument("--env-arg", action="append", metavar="K=V", default=argparse.SUPPRESS,
                   help="a constructor argument of the training env, e.g. max_turns=6 (repeatable)")
    p.add_argument("--eval-env-arg", action="append", metavar="K=V", default=argparse.SUPPRESS,
                   help="a constructor argument of the eval env, over the training ones (split=test is set)")
    p.add_argument("--config", metavar="FILE.yaml", default=None, help="YAML file with any of the keys above (flags win)")
    p.set_defaults(_run=run_train)


def build_config(args: argparse.Namespace):
    from .trainer import TrainConfig

    given = {k: v for k, v in vars(args).items() if k not in ("_run", "command", "config")}
    values: dict = {}
    out = given.get("out")
    if given.get("resume") and out and (Path(out) / "config.yaml").exists():
        values.update(yaml.safe_load((Path(out) / "config.yaml").read_text()) or {})
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    for key, flag in DICT_FLAGS.items():
        attr = flag[2:].replace("-", "_")
        if attr in given:
            values[key] = {**values.get(key, {}), **_parse_kv(given.pop(attr), flag)}
    values.update(given)
    return TrainConfig.from_dict(values)


def _quiet_transformers() -> None:
    """transformers' own bars for loading and saving weights would cut through the kit's progress bars."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def run_train(args: argparse.Namespace) -> int:
    from .trainer import Trainer

    _quiet_transformers()
    config = build_config(args)
    summary = Trainer(config).train()
    before, after = summary["eval_before"]["success"], summary["eval_after"]["success"]
    print(f"held-out greedy success: {before:.3f} -> {after:.3f} ({summary['wall_s']:.0f} s)")
    return 0


# ---- eval ----------------------------------------------------------------------------------------


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model or checkpoint on held-out tasks",
                       description="Greedy success@1 (and pass@k) of a model or checkpoint on an environment's test split. "
                       "BFCL results are also broken down per category.")
    p.add_argument("--model", default="default", help="model id/path, checkpoint folder, or 'default'")
    p.add_argument("--env", default="pbsd/ToolCall-v0", help="environment id")
    p.add_argument("--n", type=int, default=100, help="tasks (the first n of the test split)")
    p.add_argument("--split", default="test", help="split to evaluate on")
    p.add_argument("--env-arg", action="append", metavar="K=V", default=[], help="env constructor argument (repeatable)")
    p.add_argument("--pass-k", type=int, default=0, help="also sample k per task at --temperature for pass@k")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--view", choices=("student", "teacher"), default="student")
    p.add_argument("--out", default=None, help="also write the trajectories to this JSONL file")
    p.add_argument("--device", default="auto")
    p.set_defaults(_run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import gymnasium

    _quiet_transformers()
    from .rollout import Collector
    from .trajectory import save_jsonl

    _check_env_id(args.env)
    env_kwargs = {**_parse_kv(args.env_arg, "--env-arg"), "split": args.split}
    policy = load_any(args.model, device=args.device)
    env = gymnasium.make(args.env, **env_kwargs)
    n_tasks = env.unwrapped.num_tasks
    env.close()
    n = args.n if n_tasks is None else min(args.n, n_tasks)
    collector = Collector.for_policy(policy, progress=True)
    trajs = collector.collect(args.env, list(range(n)), env_kwargs=env_kwargs, view=args.view, temperature=0.0,
                              max_new_tokens=args.max_new_tokens, max_tokens=args.max_tokens)
    result = {"env": args.env, "model": args.model, "n": n, "success": sum(t.success for t in trajs) / max(n, 1),
              "mean_action_tokens": sum(t.num_action_tokens for t in trajs) / max(n, 1)}
    if args.pass_k:
        sampled = collector.collect(args.env, [i for i in range(n) for _ in range(args.pass_k)], env_kwargs=env_kwargs,
                                    view=args.view, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                    max_tokens=args.max_tokens)
        groups = [sampled[i : i + args.pass_k] for i in range(0, len(sampled), args.pass_k)]
        result[f"pass_at_{args.pass_k}"] = sum(any(t.success for t in g) for g in groups) / max(n, 1)
    categories: dict[str, list[bool]] = {}
    for t in trajs:
        categories.setdefault(task_category(args.env, t.task_id), []).append(t.success)
    if len(categories) > 1 or "BFCL" in args.env:
        result["per_category"] = {c: {"n": len(v), "accuracy": sum(v) / len(v)} for c, v in sorted(categories.items())}
    if args.out:
        save_jsonl(trajs, args.out)
    print(json.dumps(result, indent=2))
    return 0


def task_category(env_id: str, task_id: str) -> str:
    """BFCL task ids look like ``simple_12`` or ``live_parallel_multiple_3-1-0``: the category is the prefix."""
    if "BFCL" not in env_id:
        return "all"
    head = task_id.split("-")[0]
    parts = head.split("_")
    return "_".join(parts[:-1]) if len(parts) > 1 and parts[-1].isdigit() else head


# ---- export and plot -----------------------------------------------------------------------------


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint as a plain transformers model folder",
                       description="Copy a checkpoint's model (or LoRA adapter) and tokenizer to --out. With --merge, a LoRA "
                       "adapter is merged into its base model so plain transformers can load the result.")
    p.add_argument("checkpoint", help="checkpoint folder (runs/<name>/checkpoints/step_XXXXXX)")
    p.add_argument("--out", required=True, help="destination folder")
    p.add_argument("--merge", action="store_true", help="merge a LoRA adapter into its base model")
    p.set_defaults(_run=run_export)


def run_export(args: argparse.Namespace) -> int:
    ckpt, out = Path(args.checkpoint), Path(args.out)
    if not ckpt.is_dir():
        raise ValueError(f"checkpoint folder not found: {ckpt}")
    is_adapter = (ckpt / "adapter_config.json").exists()
    if args.merge and is_adapter:
        policy = load_any(str(ckpt), device="cpu")
        merged = policy.model.merge_and_unload()
        merged.save_pretrained(out)
        policy.tokenizer.save_pretrained(out)
        print(f"merged adapter into its base model: {out}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for f in ckpt.iterdir():
        if f.is_file() and f.name not in ("optimizer.pt", "scheduler.pt", "rng_state.pt"):
            shutil.copy2(f, out / f.name)
    print(f"exported {'adapter' if is_adapter else 'model'} to {out}")
    return 0


def add_plot_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw a run folder's learning curves (curves.png)")
    p.add_argument("run_dir", help="run folder (runs/<name>)")
    p.add_argument("--out", default=None, help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(_run=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from .plotting import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


# ---- shared ----------------------------------------------------------------------------------------


def load_any(model: str, device: str = "auto", lora_r: int = 0):
    """Load a model id/path, 'default', or a training checkpoint (full model or LoRA adapter)."""
    from .loading import load_policy

    path = Path(model)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        from .models import Policy

        state = path / "trainer_state.json"
        base = json.loads(state.read_text())["base_model"] if state.exists() else json.loads(
            (path / "adapter_config.json").read_text())["base_model_name_or_path"]
        policy = load_policy(base, device=device)
        model_ = PeftModel.from_pretrained(policy.model, str(path))
        return Policy(model_, policy.tokenizer)
    return load_policy(model, lora_r=lora_r, device=device)


def _check_env_id(env_id: str) -> None:
    import gymnasium

    from .envs import ENVIRONMENTS

    if env_id not in gymnasium.registry:
        raise ValueError(f"unknown env {env_id!r}; registered pbsd envs: {', '.join(ENVIRONMENTS)}")


def add_all(sub) -> None:
    for add in (add_train_parser, add_eval_parser, add_export_parser, add_plot_parser):
        add(sub)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `pbsd-agents` command")
