"""``TrainConfig``: every option of a training run, with its command-line help on the field.

The YAML config file and the ``pbsd-agents train`` flags both fill this one dataclass. This module
imports neither torch nor transformers, so the command line can show its help without them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "default"
ENGINES = ("hf", "hf-generate", "vllm")
PARALLEL = ("auto", "ddp", "fsdp")  # pbsd_agents.parallel.MODES (that module imports torch when used)
# What may differ from the run's config.yaml on --resume: the budget, the cadences, where and how it reports.
RESUMABLE = ("steps", "max_trajectories", "max_wall_s", "eval_every", "save_every", "keep_last", "out", "resume",
             "parallel", "device", "threads", "report_to", "progress")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


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
    engine: str = _opt("hf", "rollout engine: hf (the kit's cached decoding of a transformers model, CPU or GPU), "
                       "hf-generate (transformers generate: slower, for comparison) or vllm (GPU, experimental)")
    lora_r: int = _opt(0, "LoRA rank; 0 = full fine-tuning, which keeps a frozen copy of the initial weights as the "
                       "teacher (one more copy of the model in memory: ~2 bytes/param in bf16, 4 in fp32)")
    lora_alpha: int = _opt(0, "LoRA alpha (0 = 2 x rank)")
    steps: int = _opt(100, "optimizer steps (ignored when --max-trajectories is set)")
    max_trajectories: int = _opt(0, "budget in sampled trajectories, teacher samples included (0 = use --steps)")
    max_wall_s: float = _opt(0.0, "stop training after this many seconds (0 = no limit); "
                             "evaluation and the final checkpoint still run")
    tasks_per_step: int = _opt(8, "tasks sampled per step (per process when launched with torchrun or accelerate)")
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
    eval_tasks: int = _opt(64, "held-out tasks per evaluation (split between the processes of a launched run)")
    pass_k: int = _opt(4, "samples per task at the student temperature for pass@k and T=1 success")
    save_every: int = _opt(10, "steps between checkpoints (0 = only the final one); a kill loses at most this many")
    keep_last: int = _opt(2, "checkpoints kept")
    out: str = _opt("", "run folder (default runs/<algo>-<env>-<time>); an existing one needs --resume")
    resume: bool = _opt(False, "continue the run in --out from its newest valid checkpoint, with its config.yaml; "
                        f"only {', '.join(RESUMABLE[:-3])}, device, report_to and progress may differ from it")
    parallel: str = _opt("auto", "with several processes (torchrun, accelerate launch): ddp (each holds the whole "
                         "policy, gradients averaged), fsdp (weights, gradients, optimizer state and the frozen "
                         "teacher sharded with FSDP2), or auto (fsdp under an accelerate FSDP config, else ddp); "
                         "ignored in one process. Checkpoints hold the full state, so a "
                         "run resumes with any number of processes and either mode (the same number reproduces the "
                         "same task stream)")
    seed: int = _opt(0, "random seed (tasks and sampling of every step derive from it)")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N or mps")
    threads: int = _opt(0, "torch CPU threads (0 = auto: one per core that other work leaves idle, picked again "
                        "during the run from the load other processes put on the machine; threads waiting for busy "
                        "cores slow every step down)")
    report_to: str = _opt("none", "also log to experiment trackers: none, tensorboard, wandb or trackio, "
                          "comma-separated for several (e.g. tensorboard,wandb); each is an extra: "
                          "pip install 'pbsd-agents[wandb]'")
    progress: bool = _opt(True, "show progress bars and messages")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a mapping (YAML, flags); values are coerced to each field's type (``"1e-3"`` is a float)."""
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(cls.field_names())}")
        return cls(**coerce_fields(cls, d, "config"))

    def validate(self) -> None:
        """Raise a one-line ``ValueError`` naming the first bad option."""
        from .envs.registry import resolve_env_id
        from .trackers import parse_report_to

        from .algorithms import ALGORITHMS  # imports torch: only when a run is really configured

        if self.algo not in ALGORITHMS:
            raise ValueError(f"unknown algo {self.algo!r}; valid choices: {', '.join(ALGORITHMS)}")
        resolve_env_id(self.env)
        if (Path(self.model).expanduser() / "adapter_config.json").is_file():
            # a LoRA adapter on top of it would leave the teacher (adapters off) at the adapter's base model
            raise ValueError(f"model {self.model!r} is a LoRA adapter; merge it into its base first "
                             f"(pbsd-agents export {self.model} --out DIR --merge) and train from --model DIR")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid choices: {', '.join(ENGINES)}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"unknown parallel mode {self.parallel!r}; valid choices: {', '.join(PARALLEL)}")
        parse_report_to(self.report_to)  # known names, installed packages: before anything loads
        for key, value in coerce_fields(type(self), dataclasses.asdict(self), "config").items():
            setattr(self, key, value)  # a config built in Python gets the same types as one read from YAML
        for name in ("steps", "tasks_per_step", "grad_accum", "max_new_tokens", "max_tokens", "eval_tasks", "pass_k",
                     "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_trajectories", "warmup_steps", "eval_every", "save_every", "lora_r", "lora_alpha",
                     "max_wall_s", "temperature", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0 or getattr(self, name) == math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = auto), got {self.threads}")
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, cuda:N, mps")
        for name in ("env_kwargs", "eval_env_kwargs", "algo_args"):
            if any(not isinstance(k, str) or not k.isidentifier() for k in getattr(self, name)):
                raise ValueError(f"{name} keys must be argument names, got {sorted(map(str, getattr(self, name)))}")
        self.algorithm_config()  # rejects unknown algo_args

    def algorithm_config(self):
        from .algorithms import ALGORITHMS

        cls = ALGORITHMS[self.algo][1]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(self.algo_args) - names)
        if unknown:
            raise ValueError(f"unknown {self.algo} option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**coerce_fields(cls, self.algo_args, f"{self.algo} option"))

    def resume_conflicts(self, saved: dict) -> list[str]:
        """The options that differ from a run's saved config and may not change on resume."""
        def same(key: str) -> bool:
            if key == "algo_args" and saved.get("algo") == self.algo:  # "1e-3" and 0.001 are the same option value
                return TrainConfig(algo=self.algo, algo_args=saved[key]).algorithm_config() == self.algorithm_config()
            return coerce_fields(type(self), {key: saved[key]}, "")[key] == getattr(self, key)

        return [f"{k}={getattr(self, k)!r} (the run has {saved[k]!r})" for k in self.field_names()
                if k not in RESUMABLE and k in saved and not same(k)]

    def resolved_eval_env_kwargs(self) -> dict:
        """The eval env's constructor arguments: the training ones, ``split="test"``, then ``eval_env_kwargs``."""
        return {**self.env_kwargs, "split": "test", **self.eval_env_kwargs}


def coerce_fields(cls, values: dict, what: str) -> dict:
    """``values`` with each one converted to the type of ``cls``'s field default: ints from integral
    numbers or digit strings, floats from numbers or numeric strings (YAML reads ``1e-3`` as a string),
    booleans only as booleans. A value that does not fit is a one-line ``ValueError`` naming the key.
    """
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        kind = type(defaults[key]) if defaults.get(key) is not None else float  # None defaults are optional numbers
        out[key] = value if value is None and defaults.get(key) is None else _coerce(key, value, kind, what)
    return out


def _coerce(key: str, value, kind: type, what: str):
    bad = ValueError(f"{what} {key} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}".strip())
    if kind is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise bad
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        if not isinstance(value, str):
            raise bad
        try:
            return float(value)
        except ValueError:
            raise bad from None
    if kind is str and not isinstance(value, str):
        raise bad
    if kind is dict and not isinstance(value, dict):
        raise bad
    return value
