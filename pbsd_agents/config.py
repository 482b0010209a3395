"""``TrainConfig``: every option of a training run, with its command-line help on the field.

The YAML config file and the ``pbsd-agents train`` flags both fill this one dataclass. This module
imports neither torch nor transformers, so the command line can show its help without them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_MODEL = "default"
ENGINES = ("hf", "vllm")
REPORT_TO = ("none", "tensorboard")


def _opt(default, help_text: str):
    """A dataclass field carrying its command-line help."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    """Everything a run needs (see each field's ``metadata["help"]``, shown by ``pbsd-agents train --help``)."""

    algo: str = _opt("pbsd", "learning algorithm: pbsd (the kit's method), opsd, grpo or sft")
    algo_args: dict = _opt({}, "an option of the algorithm's config, e.g. beta=0.1, pair_filter=verifier, nll_coef=0.5")
    # MathCalc: measured, the clearest 100-step PBSD gain with the embedded model.
    env: str = _opt("pbsd/MathCalc-v0", "environment id: any gymnasium-registered id, "
                    "including module:Name-v0 (see `pbsd-agents envs`)")
    env_kwargs: dict = _opt({}, "a constructor argument of the training env, e.g. max_turns=6")
    eval_env_kwargs: dict = _opt({}, "a constructor argument of the eval env, over the training ones (split=test is set)")
    model: str = _opt(DEFAULT_MODEL, "Hugging Face model id or local path, a checkpoint folder, "
                      "or 'default' (the embedded tiny model)")
    engine: str = _opt("hf", "rollout engine: hf (transformers generate, CPU or GPU) or vllm (GPU, experimental)")
    lora_r: int = _opt(0, "LoRA rank; 0 = full fine-tuning, which keeps a frozen copy of the initial weights as the "
                       "teacher (one more copy of the model in memory: ~2 bytes/param in bf16, 4 in fp32)")
    lora_alpha: int = _opt(0, "LoRA alpha (0 = 2 x rank)")
    steps: int = _opt(100, "optimizer steps (ignored when --max-trajectories is set)")
    max_trajectories: int = _opt(0, "budget in sampled trajectories, teacher samples included (0 = use --steps)")
    max_wall_s: float = _opt(0.0, "stop training after this many seconds (0 = no limit); "
                             "evaluation and the final checkpoint still run")
    tasks_per_step: int = _opt(8, "tasks sampled per step")
    temperature: float = _opt(1.0, "student sampling temperature (the teacher's too unless the algorithm overrides it)")
    # 160: three parallel calls of the embedded model take ~130 tokens.
    max_new_tokens: int = _opt(160, "tokens per assistant turn")
    max_tokens: int = _opt(512, "tokens per trajectory after the prompt; longer episodes are cut and marked truncated")
    lr: float = _opt(1e-4, "AdamW learning rate")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_steps: int = _opt(0, "linear learning-rate warm-up steps")
    grad_clip: float = _opt(1.0, "gradient norm clip (0 = none)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step (tasks are split between them)")
    eval_every: int = _opt(50, "steps between held-out evaluations (0 = only before and after)")
    eval_tasks: int = _opt(64, "held-out tasks per evaluation")
    pass_k: int = _opt(4, "samples per task at the student temperature for pass@k and T=1 success")
    save_every: int = _opt(50, "steps between checkpoints (0 = only the final one)")
    keep_last: int = _opt(2, "checkpoints kept")
    out: str = _opt("", "run folder (default runs/<algo>-<env>-<time>); an existing one needs --resume")
    resume: bool = _opt(False, "continue the run in --out from its last checkpoint, with its config.yaml")
    seed: int = _opt(0, "random seed (tasks and sampling of every step derive from it)")
    device: str = _opt("auto", "auto, cpu or cuda")
    report_to: str = _opt("none", "also log to: none or tensorboard")
    progress: bool = _opt(True, "show progress bars and messages")

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
        """Raise a one-line ``ValueError`` naming the first bad option."""
        from .envs.registry import resolve_env_id

        from .algorithms import ALGORITHMS  # imports torch: only when a run is really configured

        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algo {self.algo!r}; valid choices: {', '.join(ALGORITHMS)}")
        resolve_env_id(self.env)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid choices: {', '.join(ENGINES)}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}")
        for name in ("steps", "tasks_per_step", "grad_accum", "max_new_tokens", "max_tokens", "eval_tasks", "pass_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.algorithm_config()  # rejects unknown algo_args

    def algorithm_config(self):
        from .algorithms import ALGORITHMS

        cls = ALGORITHMS[self.algo][1]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.algo_args) - names)
        if unknown:
            raise ValueError(f"unknown {self.algo} option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**self.algo_args)

    def resolved_eval_env_kwargs(self) -> dict:
        """The eval env's constructor arguments: the training ones, ``split="test"``, then ``eval_env_kwargs``."""
        return {**self.env_kwargs, "split": "test", **self.eval_env_kwargs}
