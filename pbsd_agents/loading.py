"""Load a policy (model + tokenizer + chat renderer) by hub id or local path, or build a tiny one.

``load_policy`` is what the CLI and the trainer call. ``build_tiny_model`` and ``byte_tokenizer``
make small models and tokenizers from a config, with no download, for tests, doctests and the
laptop-sized default job.

Example:
    >>> from pbsd_agents.loading import build_tiny_model, byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> model = build_tiny_model(tok, hidden_size=16, num_layers=1)
    >>> model.config.vocab_size == len(tok), model.num_parameters() < 20_000
    (True, True)
"""

from __future__ import annotations


__all__ = ["BYTE_CHAT_TEMPLATE", "build_tiny_model", "byte_tokenizer", "load_policy", "resolve_device"]

# A ChatML template with tool support, for byte_tokenizer(); written for this kit.
BYTE_CHAT_TEMPLATE = (
    "{%- set sys = messages[0].content if messages and messages[0].role == 'system' else '' -%}"
    "{%- if tools -%}"
    "{{ '<|im_start|>system\\n' }}{% if sys %}{{ sys + '\\n\\n' }}{% endif %}"
    "{{ 'Tools, as JSON schemas:\\n' }}{% for t in tools %}{{ t | tojson }}{{ '\\n' }}{% endfor %}"
    "{{ 'Call a tool with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.<|im_end|>\\n' }}"
    "{%- elif sys -%}{{ '<|im_start|>system\\n' + sys + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if not (loop.first and m.role == 'system') -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def byte_tokenizer(chat_template: str | None = BYTE_CHAT_TEMPLATE):
    """A 259-token byte-level tokenizer (256 bytes + ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``)
    with a ChatML tool-calling template. Built in memory: no files, no download.

    Example:
        >>> tok = byte_tokenizer()
        >>> ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
        >>> ids
        '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
        >>> tok.decode(tok("héllo", add_special_tokens=False)["input_ids"])
        'héllo'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_special_tokens({
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    })
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def build_tiny_model(tokenizer, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                     intermediate_size: int | None = None, seed: int = 0, eot_mean_length: float | None = None,
                     eot_token: str | None = None):
    """A randomly initialised Qwen2 causal LM sized to ``tokenizer`` (tied embeddings, float32).

    ``eot_mean_length`` makes the end-of-turn token likely enough that sampled turns last about that
    many tokens (a random model over a 150k vocabulary would otherwise almost never stop). It does
    this by giving every embedding one shared constant coordinate (a shift that cancels in the
    softmax) and the end-of-turn token a larger one; the rest of the model stays random.
    """
    import math

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = len(tokenizer)
    heads = max(1, min(num_heads, hidden_size // 8))
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=1 if heads % 2 else max(1, heads // 2),
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.eval()
    if eot_mean_length:
        eot = tokenizer.convert_tokens_to_ids(eot_token) if eot_token else tokenizer.eos_token_id
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            shift = 1.0
            emb[:, 0] = shift
            # after the final RMSNorm, coordinate 0 is about sqrt(hidden): the eot logit gains sqrt(h)*boost.
            p = 1.0 / max(eot_mean_length, 1.0)
            boost = math.log(p / (1 - p) * (vocab - 1)) if p < 1 else 20.0
            emb[eot, 0] = shift + boost / math.sqrt(hidden_size)
    return model


def resolve_device(device: str | None = None) -> str:
    """``None`` or ``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _usable() -> set[int] | None:
    """The CPUs this process may run on (None where the platform does not say)."""
    import os

    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _cpu_times(cpus: set[int] | None = None) -> tuple[int, int] | None:
    """``(all, idle)`` jiffies from ``/proc/stat``, summed over ``cpus`` (default: every CPU); None where
    it cannot be read. Only the CPUs a process may use matter: a job pinned to 8 cores of a busy node
    must not count the load on the others."""
    try:
        with open("/proc/stat") as f:
            lines = [ln.split() for ln in f if ln.startswith("cpu")]
        rows = lines[:1] if cpus is None else [ln for ln in lines[1:] if int(ln[0][3:]) in cpus]
        # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
        values = [[int(x) for x in ln[1:9]] for ln in rows]
        if not values:
            return None
        return sum(map(sum, values)), sum(v[3] + v[4] for v in values)
    except (OSError, ValueError, IndexError):
        return None


def free_cpus(before: tuple[int, int], after: tuple[int, int], own_cores: float = 0.0, *, cpus: int) -> int:
    """How many of ``cpus`` CPUs other work left idle between two ``/proc/stat`` readings ``(all, idle)``
    summed over those CPUs. ``own_cores`` is what this process itself used over the interval (CPU
    seconds per second), which is not "other work".

    Example:
        >>> free_cpus((0, 0), (200, 100), cpus=2)                 # one of two cores busy
        1
        >>> free_cpus((0, 0), (200, 0), own_cores=2.0, cpus=2)    # busy, but all of it ours
        2
    """
    total = after[0] - before[0]
    if total <= 0:
        return cpus
    other = (1 - (after[1] - before[1]) / total) * cpus - own_cores
    return max(0, min(cpus, round(cpus - max(0.0, other))))


def idle_cores(interval: float = 0.2) -> int | None:
    """How many of this process's CPUs other work leaves idle, from ``/proc/stat`` over ``interval``
    seconds (``None`` where that file does not exist)."""
    import os
    import time

    usable = _usable()
    before = _cpu_times(usable)
    time.sleep(interval)
    after = _cpu_times(usable)
    if before is None or after is None:
        return None
    return free_cpus(before, after, cpus=len(usable) if usable else (os.cpu_count() or 1))


def set_cpu_threads(requested: int = 0) -> int:
    """Set torch's intra-op CPU threads and return the count.

    ``requested`` > 0 is used as given. ``0`` (auto): one thread per CPU that other work leaves idle
    at the start (at least one). On an idle machine that is every core; when other processes keep the
    cores busy, torch's threads would wait for each other at every op, which made a step of the
    main job 3-7 times as long as with one thread (docs/BENCHMARKS.md, "shared machine").
    """
    import torch

    if requested < 0:
        raise ValueError(f"threads must be >= 0 (0 = auto), got {requested}")
    if requested == 0:
        idle = idle_cores()
        requested = torch.get_num_threads() if idle is None else max(1, idle)
    torch.set_num_threads(requested)
    return requested


class CpuThreads:
    """torch's CPU threads for a run: fixed, or (``requested=0``) kept in step with the machine's load.

    Auto starts as :func:`set_cpu_threads` does; each :meth:`update` (the trainer calls it after every
    generation round and every step) picks again, one thread per CPU that other processes left idle
    since the last pick, at least ``MIN_INTERVAL`` seconds ago: the machine's busy time from
    ``/proc/stat`` minus this process's own CPU time. A start-time sample alone is racy: two runs
    started together both find the cores idle and both take all of them, and then every op waits for
    a thread the other run holds off its core. With updates, each sees the other at its next round or
    step and drops to its share, and a run takes the cores back when the other ends. (CPU time of child
    processes still running, such as a local inference server, counts as other work.)

    Example:
        >>> import torch
        >>> threads = CpuThreads(torch.get_num_threads())  # a fixed count: update() keeps it
        >>> threads.update() == torch.get_num_threads()
        True
    """

    MIN_INTERVAL = 0.5  # seconds of load to judge by (a /proc/stat tick is 10 ms)

    def __init__(self, requested: int = 0):
        self.auto = requested == 0
        self.count = set_cpu_threads(requested)
        self._cpus = _usable()
        self._mark = self._read() if self.auto else None

    def _read(self):
        import time

        times = _cpu_times(self._cpus)
        return None if times is None or not self._cpus else (times, time.process_time(), time.perf_counter())

    def update(self) -> int:
        """Re-pick the count from the load since the last pick (auto only); returns the count in use."""
        if not self.auto:
            return self.count
        import torch

        mark = self._read()
        if mark is not None and self._mark is not None:
            if mark[2] - self._mark[2] < self.MIN_INTERVAL:
                return self.count  # too short to judge: keep measuring from the last pick
            own = (mark[1] - self._mark[1]) / (mark[2] - self._mark[2])
            count = max(1, free_cpus(self._mark[0], mark[0], own, cpus=len(self._cpus)))
            if count != self.count:
                torch.set_num_threads(count)
                self.count = count
        self._mark = mark
        return self.count


def load_policy(model, *, lora_r: int = 0, lora_alpha: int | None = None, lora_dropout: float = 0.0,
                device: str | None = None, dtype=None, frozen_teacher: bool = True):
    """Load a causal LM and its tokenizer as a :class:`~pbsd_agents.models.Policy`.

    Args:
        model: a preset name (``default``: the embedded tiny model; ``smollm2-135m``; see
            :mod:`pbsd_agents.presets`), a local model folder (``save_pretrained`` layout) or ``.gguf``
            file, or a Hugging Face hub id.
        lora_r: LoRA rank; 0 trains the full model. With LoRA the teacher is the base model (adapters off).
        lora_alpha: LoRA scaling (default ``2 * lora_r``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` or ``"auto"`` picks CUDA when available.
        dtype: a torch dtype or its name (``"bfloat16"``); default float32 on CPU, bfloat16 on CUDA when supported.
        frozen_teacher: for full fine-tuning, keep a frozen copy of the initial weights as the teacher.

    The policy's renderer uses the preset's end-of-turn token where it names one; the model's
    generation config stops at the template's end-of-turn token.

    Raises:
        FileNotFoundError: the model cannot be found (no such folder, hub unreachable, preset not built).
        ImportError: a preset whose packages are missing (the message says what to install).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .chat import ChatRenderer
    from .models import Policy
    from .presets import resolve_model

    src = resolve_model(model)
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    elif isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16")
        dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.path, **src.load_kwargs())
        lm = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, **src.load_kwargs())
    except OSError as exc:
        where = "a local folder" if src.kind != "hub" else "no such local folder, and not a reachable hub id"
        raise FileNotFoundError(f"could not load model {str(model)!r} ({where}): {str(exc).splitlines()[0]}") from None
    src.prepare_tokenizer(tokenizer)
    quantizer = getattr(lm, "hf_quantizer", None)
    if src.gguf_file and quantizer is not None and not getattr(quantizer, "packed_modules", None):
        # Every GGUF weight was unpacked to a plain tensor, but the quantizer left on the model makes
        # save_pretrained refuse it (full fine-tuning checkpoints, merged LoRA exports): drop it.
        lm.hf_quantizer = None
        lm.config.__dict__.pop("quantization_config", None)
    lm.to(device)
    lm.eval()
    renderer = ChatRenderer(tokenizer, eot_token=src.eot_token)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(renderer.stop_ids[-1])
    lm.generation_config.eos_token_id = list(renderer.stop_ids)
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    if lora_r:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha or 2 * lora_r, lora_dropout=lora_dropout,
                         target_modules="all-linear", task_type="CAUSAL_LM")
        lm = get_peft_model(lm, cfg)
    return Policy(lm, tokenizer, renderer=renderer, frozen_teacher=frozen_teacher)
