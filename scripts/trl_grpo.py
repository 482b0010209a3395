"""Train a model with TRL's GRPOTrainer on a pbsd environment (the env's reward is TRL's reward).

Needs the trl extra (``pip install "pbsd-agents[trl]"``). On a laptop CPU, with the embedded tiny model:

    python scripts/trl_grpo.py --env pbsd/ToolCall-v0 --max-steps 20

Multi-turn envs work the same way (``--env pbsd/MathCalc-v0``); any model folder or hub id goes in
``--model``. TRL writes its logs and checkpoints under ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="pbsd/ToolCall-v0", help="a registered env id (see `pbsd-agents envs`)")
    p.add_argument("--env-kwargs", default="{}", metavar="JSON", help="env constructor arguments, as a JSON object")
    p.add_argument("--model", default="default",
                   help="'default' (the embedded tiny model), a model folder, or a Hugging Face hub id")
    p.add_argument("--tasks", type=int, default=64, help="train on task indices 0..tasks-1")
    p.add_argument("--max-steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--num-generations", type=int, default=4, help="episodes per task in a GRPO group")
    p.add_argument("--batch-size", type=int, default=8, help="episodes per device per step (a multiple of --num-generations)")
    p.add_argument("--max-completion-length", type=int, default=512, help="token budget per episode, prompt excluded")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per assistant turn")
    p.add_argument("--max-turns", type=int, default=None, help="assistant turns per episode (default: the env's limit)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-to", default="none", help="TRL's trackers: none, tensorboard, wandb, trackio...")
    p.add_argument("--output-dir", default="runs/trl-grpo", help="where TRL writes its logs and checkpoints")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        sys.exit(f"error: --env-kwargs is not valid JSON: {exc}")
    if not isinstance(env_kwargs, dict):
        sys.exit("error: --env-kwargs must be a JSON object")
    if args.batch_size % args.num_generations:
        sys.exit(f"error: --batch-size ({args.batch_size}) must be a multiple of --num-generations ({args.num_generations})")
    try:
        from pbsd_agents.integrations import require

        require("trl"), require("datasets")
    except ImportError as exc:
        sys.exit(f"error: {exc}")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in trl 1.16
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from pbsd_agents.integrations.trl import EnvRollout, env_reward
    from pbsd_agents.presets import default_model_dir

    model_path = str(default_model_dir()) if args.model == "default" else args.model
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path)
    rollout = EnvRollout(args.env, tokenizer, env_kwargs=env_kwargs, max_new_tokens=args.max_new_tokens,
                         max_turns=args.max_turns, batch_size=args.batch_size)
    config = GRPOConfig(output_dir=args.output_dir, per_device_train_batch_size=args.batch_size,
                        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                        max_steps=args.max_steps, learning_rate=args.lr, temperature=args.temperature, seed=args.seed,
                        logging_steps=1, save_strategy="no", report_to=args.report_to, use_cpu=args.cpu)
    trainer = GRPOTrainer(model, reward_funcs=env_reward, args=config, train_dataset=rollout.dataset(range(args.tasks)),
                          processing_class=tokenizer, rollout_func=rollout)
    trainer.train()
    rewards = [h["rewards/env_reward/mean"] for h in trainer.state.log_history if "rewards/env_reward/mean" in h]
    print(f"{args.env}: mean env reward per step {[round(r, 3) for r in rewards]}")
    trainer.save_model(args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
