"""Rollout engines: generate from prompt token ids, return the sampled ids and their log-probabilities.

Every engine follows one contract (:class:`Engine`), checked by one test suite:

- input: prompts as lists of token ids (never text), one :class:`SamplingParams` for the batch,
  and ``teacher`` (True: the teacher's weights; with LoRA, the base model), or one such flag per
  prompt for an engine whose ``mixed_views`` is true (:class:`HFEngine`; :func:`by_view` splits
  such a call for any engine);
- output: one :class:`Generation` per prompt, in order: the sampled ids up to and including the
  first stop (end-of-turn) token, the log-probability of each sampled id under the distribution
  it was actually sampled from (after temperature, top-k, top-p), and whether a stop token ended it.

Greedy decoding (``temperature=0``) samples from a point mass, whose log-probabilities say nothing;
the engines report the model's temperature-1 log-probabilities of the chosen ids instead.

Engines: :class:`HFEngine` (transformers models, CPU or GPU, decoded by the kit's own cached loop; the default) and
:class:`VLLMEngine` (vLLM, GPU only, optional extra ``vllm``; experimental: not yet verified on a GPU).

Example:
    >>> from pbsd_agents.engines import HFEngine, SamplingParams
    >>> from pbsd_agents.loading import build_tiny_model, byte_tokenizer
    >>> from pbsd_agents.models import Policy
    >>> tok = byte_tokenizer()
    >>> engine = HFEngine(Policy(build_tiny_model(tok, hidden_size=16, num_layers=1), tok))
    >>> out = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(temperature=1.0, max_new_tokens=4, seed=0))
    >>> [len(g.ids) == len(g.logprobs) <= 4 for g in out]
    [True, True]
    >>> all(lp <= 0 for g in out for lp in g.logprobs)
    True
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import weakref
from dataclasses import dataclass, replace
from typing import Protocol, Sequence, runtime_checkable

__all__ = ["Engine", "Generation", "HFEngine", "SamplingParams", "VLLMEngine", "by_view", "cut_at_stop", "sample_logits"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one assistant turn.

    ``top_k=0`` and ``top_p=1.0`` (the defaults) sample from the full distribution: the only
    on-policy setting. Anything else makes samples off-policy (their log-probabilities are still
    exact for the distribution sampled from). ``temperature=0`` is greedy decoding.
    ``seed`` makes one ``generate`` call reproducible (``None``: the engine's global RNG).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """One sampled turn: ids (ending with the stop token when ``finished``) and their log-probabilities."""

    ids: list[int]
    logprobs: list[float]
    finished: bool

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.logprobs):
            raise ValueError(f"generation has {len(self.ids)} ids but {len(self.logprobs)} logprobs")


@runtime_checkable
class Engine(Protocol):
    """The rollout-engine contract (see the module docstring)."""

    stop_ids: tuple[int, ...]

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, teacher: bool = False) -> list[Generation]:
        ...


def cut_at_stop(ids: Sequence[int], logprobs: Sequence[float], stop_ids: Sequence[int]) -> Generation:
    """Cut a row at its first stop token (kept: the model generated it).

    Example:
        >>> cut_at_stop([5, 6, 9, 7, 9], [-1.0, -2.0, -0.5, -3.0, -0.1], stop_ids=[9])
        Generation(ids=[5, 6, 9], logprobs=[-1.0, -2.0, -0.5], finished=True)
        >>> cut_at_stop([5, 6], [-1.0, -2.0], stop_ids=[9]).finished
        False
    """
    stops = set(stop_ids)
    for i, t in enumerate(ids):
        if t in stops:
            return Generation([int(x) for x in ids[: i + 1]], [float(x) for x in logprobs[: i + 1]], True)
    return Generation([int(x) for x in ids], [float(x) for x in logprobs], False)


def by_view(engine, prompts: Sequence[Sequence[int]], sampling: SamplingParams, teacher: Sequence[bool]) -> list[Generation]:
    """``engine.generate`` with one teacher flag per prompt, as one call per view (students first)."""
    results: list[Generation | None] = [None] * len(prompts)
    for view in sorted(set(teacher)):
        rows = [i for i, t in enumerate(teacher) if t == view]
        gens = engine.generate([prompts[i] for i in rows], sampling, teacher=view)
        if len(gens) != len(rows):
            raise RuntimeError(f"engine returned {len(gens)} generations for {len(rows)} prompts")
        for i, gen in zip(rows, gens):
            results[i] = gen
    return results  # type: ignore[return-value]


# ---- transformers ------------------------------------------------------------------------------


def sample_logits(logits, sampling: SamplingParams, generator=None):
    """Draw one token per row from ``softmax(logits / T)`` with optional top-k/top-p.

    Returns ``(token [B, 1], logprob [B])``: the log-probability of each pick under the distribution
    it was drawn from. Greedy (``T=0``) takes the argmax and reports its temperature-1 log-probability.
    """
    import torch

    logits = logits.float()
    s = sampling
    if s.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        token = logits.argmax(dim=-1, keepdim=True)
    else:
        if s.temperature != 1.0:
            logits = logits / s.temperature
        if s.top_k:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = torch.softmax(sorted_logits, dim=-1)
            # drop a token when the mass before it already reaches top_p (the first one always stays)
            drop_sorted = (probs.cumsum(dim=-1) - probs) >= s.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        logp = torch.log_softmax(logits, dim=-1)
        token = _inverse_cdf_sample(logp, generator)
    return token, logp.gather(-1, token).squeeze(-1)


class _Sampler:
    """A logits processor for ``generate`` that samples with :func:`sample_logits` and records log-probabilities.

    ``generate`` runs greedy (no warpers of its own); this processor, placed last, draws the token,
    keeps its log-probability, and returns scores whose argmax is that token, so transformers'
    defaults and the model's generation config never change what is sampled.
    """

    def __init__(self, sampling: SamplingParams, generator=None):
        self.sampling = sampling
        self.generator = generator
        self.logprobs: list = []  # one [batch] tensor per generated token

    def __call__(self, input_ids, scores):
        import torch

        token, logprob = sample_logits(scores, self.sampling, self.generator)
        self.logprobs.append(logprob)
        # a new tensor (not scores.fill_): generate() may keep the scores it passed in (output_logits)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


FLAT_CDF_MAX = 8192  # vocabularies up to this size are sampled from one cumulative sum per row


def _inverse_cdf_sample(logp, generator=None):
    """One draw per row from exp(logp), by inverting the CDF (cumulative sums in float64).

    ``torch.multinomial`` draws one random number per vocabulary entry; this draws one per row.
    Up to ``FLAT_CDF_MAX`` tokens the CDF is one cumulative sum over the row. Over a larger
    vocabulary that sum and its float64 copies cost more than the LM head (16 rows of Qwen2.5's
    151k tokens: 22 ms a draw on a 2-core CPU, most of it the fresh pages of two 19 MB tensors), so
    the search runs in two levels: over the cumulative sums of blocks of about sqrt(vocab) tokens,
    then within the block found (3 ms). The blocks' own sums are float32, so the two searches find
    different tokens only where u falls within float32 rounding (about 1e-7 of a row's mass) of a
    block's edge (rare, but a 64-row comparison's 8,192 draws met it). Zero-probability tokens are
    never drawn (their CDF step is empty).
    """
    import torch

    p = logp.exp()
    rows, vocab = p.shape
    u = torch.rand((rows, 1), generator=generator, dtype=torch.float64, device=p.device)
    if vocab <= FLAT_CDF_MAX:
        cdf = p.double().cumsum(dim=-1)
        return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=vocab - 1)
    size = 1 << math.ceil(math.log2(math.sqrt(vocab)))
    full = vocab // size
    sums = p[:, :full * size].unflatten(1, (full, size)).sum(-1)
    if full * size < vocab:
        sums = torch.cat([sums, p[:, full * size:].sum(-1, keepdim=True)], dim=1)
    cdf = sums.double().cumsum(dim=-1)
    total = cdf[:, -1:]
    zero = total.new_zeros(())
    # below the total (u * total may round up to it), so that the block found holds some probability
    target = torch.minimum(u * total, torch.nextafter(total, zero))
    block = torch.searchsorted(cdf, target, right=True)
    before = torch.nn.functional.pad(cdf, (1, 0)).gather(1, block)  # the mass of the blocks before it
    cols = block * size + torch.arange(size, device=p.device)
    inside = p.gather(1, cols.clamp(max=vocab - 1)).masked_fill_(cols >= vocab, 0.0).double().cumsum(dim=-1)
    # the block's own sum may round a little below its entry in ``cdf``: stay under its last step
    rest = torch.minimum(target - before, torch.nextafter(inside[:, -1:], zero))
    return cols.gather(1, torch.searchsorted(inside, rest, right=True))


def _inner_model(model):
    """The transformers model under a peft wrapper (the one whose generation config ``generate`` reads)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


@contextlib.contextmanager
def _plain_generation_config(model):
    """Hide the model's generation config (it may set top_k, repetition_penalty...) during one call."""
    from transformers import GenerationConfig

    inner = _inner_model(model)
    saved = inner.generation_config
    inner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        inner.generation_config = saved


class HFEngine:
    """Batched generation from a transformers model (CPU or GPU).

    Args:
        policy: a :class:`~pbsd_agents.models.Policy` (``teacher=True`` generates with
            ``policy.teacher()``: the frozen copy, or the base model with LoRA adapters off).
        batch_size: most prompts per forward batch (prompts are grouped by length to limit padding).
        stop_ids: ids that end a turn; default: ``policy.renderer.stop_ids``.
        pad_id: id used for left padding (default: the tokenizer's pad id, else the first stop id).
        decode: ``"cached"`` (default): the kit's own loop over the model's modules with a
            preallocated key/value cache (:mod:`~pbsd_agents.decoding`), for Llama-style decoders,
            falling back to ``generate`` for other architectures; ``"generate"``: transformers
            ``generate`` with the kit's sampler as its last logits processor (the previous engine,
            kept for comparison).

    Prompts are left-padded; each row is cut at its first stop token, which is kept as the last id.
    Sampling is done by the kit (:func:`sample_logits`), so ``top_k``/``top_p`` defaults of
    transformers or of the model's generation config never apply.
    See the module docstring for an example.
    """

    def __init__(self, policy, *, batch_size: int = 64, stop_ids: Sequence[int] | None = None, pad_id: int | None = None,
                 decode: str = "cached"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decode not in ("cached", "generate"):
            raise ValueError(f"decode must be 'cached' or 'generate', got {decode!r}")
        self.policy = policy
        self.batch_size = batch_size
        self.decode = decode
        if stop_ids is None:
            stop_ids = policy.renderer.stop_ids
        self.stop_ids = tuple(int(i) for i in stop_ids)
        if not self.stop_ids:
            raise ValueError("HFEngine needs at least one stop id")
        if pad_id is None:
            pad_id = getattr(policy.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad_id) if pad_id is not None else self.stop_ids[0]
        self._decoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    mixed_views = True  # ``teacher`` may be one flag per prompt (see :meth:`generate`)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                 teacher: bool | Sequence[bool] = False) -> list[Generation]:
        """One :class:`Generation` per prompt. ``teacher`` is one view for all prompts, or one flag per
        prompt: the cached decoder then runs both views' rows in one loop when the teacher is a model
        of its own (a frozen copy; not LoRA, whose views share modules), else one view after the other."""
        import torch

        from .decoding import decode_views, supports

        prompts = [list(p) for p in prompts]
        flags = [bool(teacher)] * len(prompts) if isinstance(teacher, bool) else [bool(t) for t in teacher]
        if len(flags) != len(prompts):
            raise ValueError(f"HFEngine.generate: {len(flags)} teacher flags for {len(prompts)} prompts")
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("HFEngine.generate: every prompt needs at least one token")
        views = sorted(set(flags))
        together = self.decode == "cached" and self.policy.separate_teacher and supports(self.policy.model)
        if len(views) > 1 and not together:
            return by_view(self, prompts, sampling, flags)
        # batches of similar lengths, each with its share of every view (so that views stack in each)
        per_view = [sorted((i for i in range(len(prompts)) if flags[i] == v), key=lambda i: len(prompts[i]))
                    for v in views]
        size = max(1, self.batch_size // len(views))
        chunks = [[i for rows in per_view for i in rows[k: k + size]] for k in range(0, max(map(len, per_view)), size)]
        results: list[Generation | None] = [None] * len(prompts)
        with contextlib.ExitStack() as stack:
            models = []
            for view in views:
                model = stack.enter_context(self.policy.teacher() if view else self.policy.student())
                stack.callback(model.train, model.training)
                model.eval()
                stack.enter_context(_plain_generation_config(model))
                models.append(model)
            generator = None
            if sampling.seed is not None:
                generator = torch.Generator(device=self._device(models[0])).manual_seed(int(sampling.seed))
            if self.decode == "cached" and supports(models[0]):
                decoders = [self._decoder(model, view) for model, view in zip(models, views)]
                for decoder in decoders:
                    decoder.new_call()

                def batch_fn(rows):
                    ids, lps = decode_views(
                        decoders, [prompts[i] for i in rows], [views.index(flags[i]) for i in rows],
                        lambda logits: sample_logits(logits, sampling, generator),
                        max_new_tokens=sampling.max_new_tokens, stop_ids=self.stop_ids, pad_id=self.pad_id)
                    return [cut_at_stop(i, lp, self.stop_ids) for i, lp in zip(ids.tolist(), lps.tolist())]
            else:
                def batch_fn(rows):
                    return self._generate_batch(models[0], [prompts[i] for i in rows], sampling, generator)
            for rows in chunks:
                for i, gen in zip(rows, batch_fn(rows)):
                    results[i] = gen
        return results  # type: ignore[return-value]

    @staticmethod
    def _device(model):
        return next(model.parameters()).device

    def _decoder(self, model, teacher: bool):
        """The model's :class:`~pbsd_agents.decoding.CachedDecoder` for one view (kept: its fused weights
        and the key/values of the view's last call are reused)."""
        from .decoding import CachedDecoder

        per_view = self._decoders.setdefault(model, {})
        if teacher not in per_view:
            per_view[teacher] = CachedDecoder(model)
        return per_view[teacher]

    def weights_changed(self) -> None:
        """The trainer took an optimizer step: rebuild fused weights at the next call. Tensor versions
        tell it in one process; weights that FSDP gathers anew for each call keep theirs."""
        for per_view in self._decoders.values():
            for decoder in per_view.values():
                decoder.weights_changed()

    def forget(self) -> None:
        """Free the key/values kept for reuse by the next call (the collector calls it when a collection ends)."""
        for per_view in self._decoders.values():
            for decoder in per_view.values():
                decoder.forget()

    def _generate_batch(self, model, prompts: list[list[int]], sampling: SamplingParams, generator) -> list[Generation]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        device = self._device(model)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            input_ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention[r, width - len(p):] = 1
        sampler = _Sampler(sampling, generator)
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,  # the _Sampler picks the token; generate only takes the argmax of its output
            num_beams=1,
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.pad_id,
            use_cache=True,
        )
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device),
                generation_config=config, logits_processor=LogitsProcessorList([sampler]),
            )
        new = out[:, width:].tolist()
        steps = len(sampler.logprobs)
        lps = torch.stack(sampler.logprobs, dim=1).tolist() if steps else [[] for _ in prompts]
        if steps != (len(new[0]) if new else 0):
            raise RuntimeError(f"HFEngine: {steps} sampling steps for {len(new[0])} generated tokens")
        return [cut_at_stop(ids, lp, self.stop_ids) for ids, lp in zip(new, lps)]


# ---- vLLM (experimental) -----------------------------------------------------------------------


class VLLMEngine:
    """Generation with vLLM's offline API (GPU only; ``pip install pbsd-agents[vllm]``). EXPERIMENTAL:
    written against vLLM's public API and the same contract tests as :class:`HFEngine`, not yet run on a GPU.

    One engine serves both views: ``teacher=True`` generates with the base model, ``teacher=False``
    with the student's LoRA adapter when one is set (:meth:`set_student_adapter`), else the base
    model too. Prompts go in as token ids (``TokensPrompt``); the sampled token's log-probability
    comes back with each id (``logprobs=0``, ``logprobs_mode="processed_logprobs"`` where the
    installed vLLM has it, so temperature and top-k/top-p are included).

    Args:
        model: a local model folder or hub id (the base model).
        stop_ids: ids that end a turn (default: from a :class:`~pbsd_agents.chat.ChatRenderer` of the model's tokenizer).
        max_lora_rank: largest adapter rank served (LoRA is enabled when > 0).
        llm_kwargs: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``, ``max_model_len``...).

    Full fine-tuning (no adapter) would need the student's weights loaded into vLLM at every step;
    that is not supported: use :class:`HFEngine`, or LoRA.
    """

    def __init__(self, model: str, *, stop_ids: Sequence[int] | None = None, max_lora_rank: int = 64,
                 seed: int = 0, **llm_kwargs):
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ImportError("VLLMEngine needs vLLM and a GPU: pip install 'pbsd-agents[vllm]'") from exc
        from vllm import LLM

        kwargs = dict(model=str(model), seed=seed, enable_lora=max_lora_rank > 0, **llm_kwargs)
        if max_lora_rank > 0:
            kwargs.setdefault("max_lora_rank", max_lora_rank)
        kwargs.setdefault("logprobs_mode", "processed_logprobs")
        try:
            self.llm = LLM(**kwargs)
        except TypeError as exc:  # older vLLM without logprobs_mode: raw log-probs (exact only at T=1, no top-k/p)
            if "logprobs_mode" not in str(exc):
                raise
            kwargs.pop("logprobs_mode")
            self.llm = LLM(**kwargs)
            self.processed_logprobs = False
        else:
            self.processed_logprobs = True
        if stop_ids is None:
            from .chat import ChatRenderer

            stop_ids = ChatRenderer(self.llm.get_tokenizer()).stop_ids
        self.stop_ids = tuple(int(i) for i in stop_ids)
        self._adapter = None
        self._adapter_version = 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    def set_student_adapter(self, adapter) -> None:
        """Serve the student from a LoRA adapter: a folder written by ``save_pretrained``, or a peft
        model (saved to a temporary folder). Call it again after each update; each call is a new
        adapter version for vLLM's cache. ``None`` serves the student from the base model."""
        from vllm.lora.request import LoRARequest

        if adapter is None:
            self._adapter = None
            return
        if not isinstance(adapter, (str, os.PathLike)):
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="pbsd-vllm-lora-")
            path = os.path.join(self._tmp.name, f"v{self._adapter_version + 1}")
            adapter.save_pretrained(path)
            adapter = path
        self._adapter_version += 1
        self._adapter = LoRARequest(f"student-v{self._adapter_version}", self._adapter_version, str(adapter))

    def _vllm_params(self, sampling: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(
            n=1,
            temperature=float(sampling.temperature),
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            top_p=float(sampling.top_p),
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=sampling.max_new_tokens,
            stop_token_ids=list(self.stop_ids),
            ignore_eos=False,
            logprobs=0,
            seed=sampling.seed,
            skip_special_tokens=False,
            detokenize=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, teacher: bool = False) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        prompts = [list(map(int, p)) for p in prompts]
        if not prompts:
            return []
        if not self.processed_logprobs and not sampling.greedy and (
                sampling.temperature != 1.0 or sampling.top_k or sampling.top_p < 1.0):
            raise ValueError("this vLLM version returns log-probs before temperature/top-k/top-p (no logprobs_mode); "
                             "sample at temperature 1 with top_k=0, top_p=1.0, or upgrade vLLM")
        if sampling.seed is None:
            params = self._vllm_params(sampling)
        else:  # one seed per row: identical prompts must not get identical samples
            params = [self._vllm_params(replace(sampling, seed=sampling.seed * 1_000_003 + i)) for i in range(len(prompts))]
        lora = None if teacher else self._adapter
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                    lora_request=lora, use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            lps = [float(step[t].logprob) for t, step in zip(ids, comp.logprobs or [])]
            if len(lps) != len(ids):
                raise RuntimeError("vLLM returned no log-probability for some sampled ids")
            gen = cut_at_stop(ids, lps, self.stop_ids)
            if comp.finish_reason == "stop" and not gen.finished:
                raise RuntimeError("vLLM stopped at a stop token but did not return it; this vLLM version is not supported")
            results.append(gen)
        return results
