"""Cached decoding for Llama-family decoders: one forward step per generated token, nothing more.

``transformers``' ``generate`` spends most of its time per token on bookkeeping (mask and cache
objects, output wrappers, logits processors, stopping criteria) that costs far more than the
arithmetic of a small model. :class:`CachedDecoder` runs the model's own modules (norms,
projections, rotary embedding, MLP: so LoRA adapters, ``disable_adapter`` and any dtype behave as in
the model) layer by layer, with a key/value cache allocated once per batch and written in place.

Supported: the model types in ``LLAMA_LIKE`` (Llama, Mistral without sliding windows, Qwen2, Qwen3;
SmolLM2 is a Llama), laid out as ``embed_tokens``, ``layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj[,
q_norm, k_norm], post_attention_layernorm, mlp}``, ``norm``, ``rotary_emb``. :func:`supports` says
whether a model is one; the engine falls back to ``generate`` otherwise.

Rows are left-padded to a common width, so every row writes the same cache column at each step;
padded keys are masked. The prefill runs the prompt tokens flat, without the padding (the linear
maps see only real tokens; attention runs row by row). Identical prompts (the k samples of one task)
are prefilled once and their cache rows copied; a prefix that every prompt shares (a system prompt,
the tool list) is computed once and copied into each row. Rows that have stopped are dropped from
the batch once half of it has stopped; the columns they wrote are copied out, so the larger cache
is freed as the live rows move on. The key/values of every decoded row are kept until the next call
(:meth:`CachedDecoder.new_call`): a prompt there that extends one of those sequences (a multi-turn
episode's next turn: its context, the turn just generated, then the observation) copies them and
computes only the rest.

:func:`decode_views` decodes prompts of several views at once (a PBSD step's student samples with
the current weights and teacher samples with the frozen copy): each view prefills its own prompts,
then every decode step runs all rows with the views' weights stacked (one ``bmm`` per projection).

A decode step runs the layers on ``[batch, hidden]`` with fused projections and norm weights folded
into them (see ``_Layer``); it runs eager: with the embedded model at batch 16 on a CPU (torch 2.13,
inductor), a step compiled with ``torch.compile`` measured 7x slower per token than the same step
eager, and compiled layers (cache writes left eager) 1.3x slower; a whole step with static shapes (attention
over the whole preallocated cache) 1.03-1.2x faster, after 30-36 s of compiling for each batch shape.

Example:
    >>> import torch
    >>> from pbsd_agents.loading import build_tiny_model, byte_tokenizer
    >>> model = build_tiny_model(byte_tokenizer(), hidden_size=16, num_layers=1).eval()
    >>> supports(model)
    True
    >>> pick = lambda logits: (logits.argmax(-1, keepdim=True), torch.zeros(len(logits)))
    >>> ids, lps = CachedDecoder(model).decode([[1, 2, 3], [4, 5]], pick, max_new_tokens=4, stop_ids=[0], pad_id=0)
    >>> ids.shape, lps.shape
    (torch.Size([2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["CachedDecoder", "decode_views", "supports"]

_LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _parts(model):
    """``(decoder, lm_head)`` of a causal LM, peft-aware; ``(None, None)`` when the layout is not Llama's."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None:
        return None, None
    if not all(hasattr(decoder, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return None, None
    for layer in decoder.layers:
        if not all(hasattr(layer, a) for a in _LAYER_PARTS):
            return None, None
        if not all(hasattr(layer.self_attn, a) for a in _ATTN_PARTS):
            return None, None
    return decoder, head


# Model types that compute exactly what this module does: Gemma, for one, has the same module names
# but scales its embeddings and its norm weights, so matching names is not enough.
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")


def supports(model) -> bool:
    """Whether :class:`CachedDecoder` can run ``model`` (a Llama-style decoder with full attention)."""
    decoder, _ = _parts(model)
    if decoder is None:
        return False
    config = decoder.config
    if getattr(config, "model_type", None) not in LLAMA_LIKE:
        return False
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return False  # sliding-window layers need a rolling cache
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False  # (Mistral has a window and no switch; Qwen2 and Qwen3 have a switch)
    return getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager")


# rotary types whose cos/sin depend on the position only (not on how long the sequence gets)
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
SHARED_PREFIX_MIN = 16  # shorter prefixes shared between prompts are not worth a separate pass
FEW_ROWS = 256  # products over at most this many rows run as (W xᵀ)ᵀ (see _Layer.linear)
PREFILL_FLOATS = 2**26  # the prefill runs in row chunks whose largest transient stays under this (256 MB in float32)


def _plain_linear(module) -> bool:
    return type(module) is torch.nn.Linear  # not a LoRA or quantised layer: its weight is the whole map


def _rms_eps(module) -> float | None:
    """The epsilon of a plain RMSNorm module (``x / rms(x) * weight``), None for anything else."""
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    plain = type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), torch.Tensor)
    return float(eps) if plain and isinstance(eps, float) else None


def _norm(module, eps_t, x):
    """``module(x)``; for a plain RMSNorm (``eps_t``: its epsilon as a tensor) in float32, without the
    module call, as the weightless norm times the weight (``F.rms_norm`` measured 1.5x slower at these
    sizes). Other dtypes keep the module's own up-cast arithmetic."""
    if eps_t is None or x.dtype != torch.float32:
        return module(x)
    return _weightless_norm(x, eps_t) * module.weight


def _mm(x, w, b=None):
    """``x @ w (+ b)`` for a weight stored ``[in, out]``: what ``F.linear`` computes, minus its dispatch
    (a transpose and a call more per product, which add up over a decode step's ~30 products)."""
    return torch.mm(x, w) if b is None else torch.addmm(b, x, w)


def _silu(module) -> bool:
    return type(module).__name__ in ("SiLU", "SiLUActivation")


def _weightless_norm(x, eps_t):
    """``x / sqrt(mean(x^2) + eps)`` (an RMSNorm whose weight is folded elsewhere): four ops, about half
    the time of pow-mean-add-rsqrt-mul. ``eps_t`` is a tensor: a Python number is wrapped on every call."""
    l2 = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.addcmul(eps_t, l2, l2, value=1.0 / x.shape[-1]).rsqrt_()


def _rotate_folded(qkv, cos, sin, nq: int, nkv: int):
    """Rotated queries, keys, and values from a fused product ``[N, 2 nq + 3 nkv, d]`` laid out as
    ``[q; k; v; swapped q; swapped k]`` (see :class:`_Layer`): the rotation is two ops."""
    qk = torch.addcmul(qkv[:, : nq + nkv] * cos, qkv[:, nq + 2 * nkv:], sin)
    return qk[:, :nq], qk[:, nq:], qkv[:, nq + nkv: nq + 2 * nkv]


class _Layer:
    """One decoder layer's modules, run on flat hidden states ``[tokens, hidden]``.

    Where the projections are plain linear maps, q/k/v (and gate/up) are fused into one product each,
    and in float32 more is folded into those fused weights, since for a small model every op costs
    more in dispatch than in arithmetic:

    - the RMSNorm weights before them (``W (w * x) = (W diag w) x``), which leaves a weightless
      normalisation of four ops;
    - the attention scale, into the query rows;
    - rotate_half, which is a fixed permutation of each head's rows: the fused product also returns
      the queries and keys with their halves swapped, so the rotation is two ops (no ``roll``).

    The fused weights are copies, rebuilt when the weights have changed (an optimizer step, a load).
    """

    def __init__(self, layer, fuse: bool, shape: tuple[int, int, int]):
        self.layer, self.attn, self.mlp = layer, layer.self_attn, layer.mlp
        self.nq, self.nkv, self.head_dim = shape
        a, m = self.attn, self.mlp
        self.scale = a.scaling
        self.q_norm = getattr(a, "q_norm", None)  # Qwen3: a norm on each head before the rotation
        self.k_norm = getattr(a, "k_norm", None)
        qkv = (a.q_proj, a.k_proj, a.v_proj)
        # fused only when every part is a plain map and their biases are all there or all absent
        self.fuse_qkv = fuse and all(map(_plain_linear, qkv)) and len({x.bias is None for x in qkv}) == 1
        self.fuse_mlp = fuse and all(hasattr(m, x) for x in ("gate_proj", "up_proj", "down_proj", "act_fn")) \
            and all(_plain_linear(x) and x.bias is None for x in (m.gate_proj, m.up_proj))
        self.act = F.silu if self.fuse_mlp and _silu(m.act_fn) else getattr(m, "act_fn", None)
        self.norm_eps = (_rms_eps(layer.input_layernorm), _rms_eps(layer.post_attention_layernorm))
        self.plain_o = fuse and _plain_linear(a.o_proj) and a.o_proj.bias is None
        self.plain_mlp = all(hasattr(m, x) for x in ("gate_proj", "up_proj", "down_proj", "act_fn")) \
            and all(map(_plain_linear, (m.gate_proj, m.up_proj, m.down_proj)))
        self.plain_down = self.fuse_mlp and _plain_linear(m.down_proj) and m.down_proj.bias is None
        self.qkv_w = self.qkv_b = self.gate_up_w = self.o_w = self.down_w = self.eps_t = None
        self.fold = (False, False)
        self.rotate_folded = False
        self.q_scale = self.scale  # the scale still to apply to q . k (1.0 once folded into the weights)

    def refresh(self) -> None:
        """Build the fused weights (norm weights folded in, where they are) from the current ones."""
        a, m, layer = self.attn, self.mlp, self.layer
        f32 = layer.input_layernorm.weight.dtype == torch.float32
        self.o_w = a.o_proj.weight.detach().t() if self.plain_o else None
        self.down_w = m.down_proj.weight.detach().t() if self.plain_down else None
        self.fold = (self.fuse_qkv and f32 and self.norm_eps[0] is not None and a.q_proj.weight.dtype == torch.float32,
                     self.fuse_mlp and f32 and self.norm_eps[1] is not None and m.gate_proj.weight.dtype == torch.float32)
        # eps as a tensor: a Python number in an op is wrapped into a tensor on every call
        self.eps_t = [torch.tensor([e or 0.0], dtype=n.weight.dtype, device=n.weight.device)
                      for e, n in zip(self.norm_eps, (layer.input_layernorm, layer.post_attention_layernorm))]
        if self.fuse_qkv:
            projections = [a.q_proj, a.k_proj, a.v_proj]
            weights = [p.weight.detach() for p in projections]
            biases = [p.bias.detach() for p in projections] if a.q_proj.bias is not None else None
            self.rotate_folded = self.fold[0] and self.q_norm is None
            if self.rotate_folded:  # [q; k; v; swapped q; swapped k], queries scaled
                weights = self._with_swapped(weights)
                if biases is not None:
                    biases = self._with_swapped(biases)
            w = torch.cat(weights)
            self.qkv_w = (w * layer.input_layernorm.weight.detach() if self.fold[0] else w).t()
            self.qkv_b = torch.cat(biases) if biases is not None else None
            self.q_scale = 1.0 if self.rotate_folded else self.scale
        if self.fuse_mlp:
            w = torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach()
            self.gate_up_w = (w * layer.post_attention_layernorm.weight.detach() if self.fold[1] else w).t()

    def _with_swapped(self, qkv: list) -> list:
        """``[q, k, v]`` rows (weights or biases) -> ``[q, k, v, swapped q, swapped k]``, queries scaled:
        swapping the halves of each head's rows is ``roll(head_dim // 2)`` on the product's output."""
        def swapped(t):
            return t.unflatten(0, (-1, self.head_dim)).roll(self.head_dim // 2, 1).flatten(0, 1)

        q, k, v = qkv
        return [q * self.scale, k, v, swapped(q) * self.scale, swapped(k)]

    @property
    def folded(self) -> bool:
        """Whether every part runs from the fused copies (what :class:`_StackedLayer` stacks)."""
        return self.rotate_folded and self.fold[1] and self.o_w is not None and self.down_w is not None

    def norm(self, which: int, x):
        """The layer's norm ``which`` (0: before attention, 1: before the MLP); weightless when folded."""
        if self.fold[which]:
            return _weightless_norm(x, self.eps_t[which])
        plain = self.norm_eps[which] is not None
        return _norm((self.layer.input_layernorm, self.layer.post_attention_layernorm)[which],
                     self.eps_t[which] if plain else None, x)

    @staticmethod
    def linear(module, x):
        """``module(x)``; for a plain linear map, without the module call's hooks machinery, and for
        a decode step's few rows as ``(W xᵀ)ᵀ`` (a transposed result): with x's rows as the product's
        columns, MKL reads the weight at full speed, where ``F.linear`` (x Wᵀ) takes 1.2-4x longer
        for 4-64 rows on a CPU (measured on Qwen2.5-0.5B's and SmolLM2-135M's projections and LM
        heads); for one row, and a prefill's hundreds, the two cost the same."""
        if not _plain_linear(module):
            return module(x)
        if not 1 < len(x) <= FEW_ROWS or x.dim() != 2:
            return F.linear(x, module.weight, module.bias)
        w, b = module.weight, module.bias
        return (torch.mm(w, x.t()) if b is None else torch.addmm(b[:, None], w, x.t())).t()

    def qkv(self, h, cos, sin):
        """Rotated queries ``[N, nq, d]``, keys and values ``[N, nkv, d]`` of hidden states ``h [N, hidden]``;
        ``cos`` and ``sin`` (the latter with rotate_half's sign folded in) are ``[N, 1, d]``."""
        n, nq, nkv, d = len(h), self.nq, self.nkv, self.head_dim
        x = self.norm(0, h)
        half = d // 2
        if self.rotate_folded:
            return _rotate_folded(_mm(x, self.qkv_w, self.qkv_b).view(n, 2 * nq + 3 * nkv, d), cos, sin, nq, nkv)
        if self.fuse_qkv:
            qkv = _mm(x, self.qkv_w, self.qkv_b).view(n, nq + 2 * nkv, d)
            if self.q_norm is None:  # rotate queries and keys in one go
                qk = qkv[:, : nq + nkv]
                qk = qk * cos + qk.roll(half, -1) * sin
                return qk[:, :nq], qk[:, nq:], qkv[:, nq + nkv:]
            q, k, v = qkv.split((nq, nkv, nkv), dim=1)
        else:
            a = self.attn
            q, k, v = (self.linear(m, x).view(n, -1, d) for m in (a.q_proj, a.k_proj, a.v_proj))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return q * cos + q.roll(half, -1) * sin, k * cos + k.roll(half, -1) * sin, v

    def finish(self, h, out):
        """The rest of the layer after attention: output projection, residual, MLP, residual."""
        h = torch.addmm(h, out, self.o_w) if self.o_w is not None else h + self.linear(self.attn.o_proj, out)
        x = self.norm(1, h)
        if not self.fuse_mlp:
            m = self.mlp
            if self.plain_mlp:  # by hand, so that each product runs as ``linear`` does
                return h + self.linear(m.down_proj, m.act_fn(self.linear(m.gate_proj, x)) * self.linear(m.up_proj, x))
            return h + self.mlp(x)
        gate_up = torch.mm(x, self.gate_up_w)
        half = gate_up.shape[1] // 2
        act = self.act(gate_up[:, :half]) * gate_up[:, half:]
        return torch.addmm(h, act, self.down_w) if self.down_w is not None else h + self.linear(self.mlp.down_proj, act)


STACK_BYTES = 256 * 2**20  # views of larger models decode one after the other (see _Stacked.possible)


def _same_arithmetic(a: "CachedDecoder", b: "CachedDecoder") -> bool:
    """Whether two decoders of the same shapes compute alike apart from their weights (a stack runs every
    view with the first one's rotary table, epsilons and attention scale)."""
    ra, rb = a.decoder.rotary_emb, b.decoder.rotary_emb
    fa, fb = getattr(ra, "inv_freq", None), getattr(rb, "inv_freq", None)
    return (fa is not None and fb is not None and torch.equal(fa, fb)
            and getattr(ra, "rope_type", None) == getattr(rb, "rope_type", None)
            and getattr(ra, "attention_scaling", 1.0) == getattr(rb, "attention_scaling", 1.0)
            and a._final_eps == b._final_eps
            and all(x.norm_eps == y.norm_eps and x.scale == y.scale for x, y in zip(a.layers, b.layers)))


class _StackedLayer:
    """The same layer of G same-shaped models (one per view), their fused weights stacked, so that a decode
    step runs every view's rows in one batched product per projection (``bmm``; at two threads one
    costs about as much as a single view's product). Rows come group-major, the same count per group.
    Same interface as :class:`_Layer` (``qkv``, ``finish``) for the rows of all groups together."""

    def __init__(self, layers: list[_Layer]):
        first = layers[0]
        self.nq, self.nkv, self.head_dim, self.q_scale = first.nq, first.nkv, first.head_dim, first.q_scale
        self.eps_t = first.eps_t
        self.qkv_w = torch.stack([lay.qkv_w for lay in layers])  # [G, hidden, out]
        self.qkv_b = torch.stack([lay.qkv_b for lay in layers])[:, None] if first.qkv_b is not None else None
        self.o_w = torch.stack([lay.o_w for lay in layers])
        self.gate_up_w = torch.stack([lay.gate_up_w for lay in layers])
        self.down_w = torch.stack([lay.down_w for lay in layers])
        self.groups = len(layers)

    def qkv(self, h, cos, sin):
        x = _weightless_norm(h, self.eps_t[0]).view(self.groups, -1, h.shape[-1])
        qkv = torch.baddbmm(self.qkv_b, x, self.qkv_w) if self.qkv_b is not None else torch.bmm(x, self.qkv_w)
        return _rotate_folded(qkv.view(len(h), -1, self.head_dim), cos, sin, self.nq, self.nkv)

    def finish(self, h, out):
        g = self.groups
        h = torch.baddbmm(h.view(g, -1, h.shape[-1]), out.view(g, -1, out.shape[-1]), self.o_w)
        gate, up = torch.bmm(_weightless_norm(h, self.eps_t[1]), self.gate_up_w).chunk(2, dim=-1)
        return torch.baddbmm(h, F.silu(gate) * up, self.down_w).view(-1, h.shape[-1])


class _Stacked:
    """G decoders' weights stacked for one decode loop over all their rows (see :func:`decode_views`):
    embeddings, layers and the LM head (final norm weights folded in). Copies, made from the fused
    weights of each decoder's last refresh."""

    def __init__(self, decoders: list["CachedDecoder"]):
        self.refreshes = tuple(d.refreshes for d in decoders)
        self.groups = len(decoders)
        self.layers = [_StackedLayer(list(lays)) for lays in zip(*(d.layers for d in decoders))]
        embeds = [d.decoder.embed_tokens.weight.detach() for d in decoders]
        self.vocab = embeds[0].shape[0]
        self.embeddings = torch.cat(embeds)  # group g's token t is row g * vocab + t
        self.final_eps = decoders[0]._final_eps_t
        self.head_w = torch.stack([(d.head.weight.detach() * d.decoder.norm.weight.detach()).t() for d in decoders])

    @staticmethod
    def possible(decoders: list["CachedDecoder"]) -> bool:
        """Whether these decoders (weights refreshed) can run stacked: the same shapes and arithmetic
        (rotary frequencies, norm epsilons, attention scale), every layer :attr:`_Layer.folded`, plain
        embeddings, a plain final RMSNorm and an LM head without bias, and models under
        ``STACK_BYTES`` each (the stack is one more copy of every view's weights)."""
        first = decoders[0]
        shapes = [[(p.shape, p.dtype, p.device) for p in d.params] for d in decoders]
        return (len(decoders) > 1 and all(s == shapes[0] for s in shapes)
                and sum(p.numel() * p.element_size() for p in first.params) < STACK_BYTES
                and all(_same_arithmetic(first, d) for d in decoders[1:])
                and all(lay.folded and lay.act is F.silu for d in decoders for lay in d.layers)
                and all(type(d.decoder.embed_tokens) is torch.nn.Embedding and _plain_linear(d.head)
                        and d.head.bias is None and d._final_eps is not None for d in decoders))

    def embed(self, token, group):
        return F.embedding(token + group * self.vocab, self.embeddings)

    def logits(self, h):
        x = _weightless_norm(h, self.final_eps).view(self.groups, -1, h.shape[-1])
        return torch.bmm(x, self.head_w).view(len(h), -1)


class _Segments:
    """Attention of several prefill segments (see :meth:`CachedDecoder._prefill`) as one padded batch.

    After the first turn a prefill is a few tokens per row (the observation and the next generation
    prompt) attending to hundreds of kept ones: one SDPA call and two cache writes per row and layer
    cost more in dispatch than in arithmetic (the main job's engine time: 3% less batched). Here each
    layer writes every segment's keys and values with one indexed copy each and runs two batched
    products over the rows' common column window, each segment's queries padded to the longest and
    masked to its own columns. Columns of the window that
    a row has not written are read with zero weight, so they must hold finite numbers (the batch cache
    is allocated with zeros).
    """

    MAX_SCORES = 2**24  # floats: a larger score matrix goes one segment at a time, through SDPA
    # Longer segments (a first turn's prompts) go one at a time too: there the padded products cost more
    # than one SDPA call per row (64 ToolCall prompts of ~90 tokens each, batched: 1.3x slower).
    MAX_WIDTH = 32

    @classmethod
    def fits(cls, segments, num_heads: int) -> bool:
        """Whether ``segments`` are short enough to batch and their padded score matrix stays under ``MAX_SCORES``."""
        width = max(n for _, _, n, _ in segments)
        window = max(col + n for _, col, n, _ in segments) - min(first for _, _, _, first in segments)
        return width <= cls.MAX_WIDTH and len(segments) * num_heads * width * window <= cls.MAX_SCORES

    def __init__(self, segments, device, dtype, group: int):
        rows = [r for r, _, _, _ in segments]
        lengths = torch.tensor([n for _, _, n, _ in segments], device=device)
        self.lo = min(first for _, _, _, first in segments)
        self.hi = max(col + n for _, col, n, _ in segments)
        self.width = max(n for _, _, n, _ in segments)
        self.count = len(segments)
        # the rows' cache as a slice when they are consecutive (no copy), else gathered
        self.rows = slice(rows[0], rows[-1] + 1) if rows == list(range(rows[0], rows[-1] + 1)) \
            else torch.tensor(rows, device=device)
        self.seg = torch.repeat_interleave(torch.arange(len(segments), device=device), lengths)  # each token's segment
        self.at = torch.cat([torch.arange(n, device=device) for _, _, n, _ in segments])  # its place in it
        self.cache_row = torch.tensor(rows, device=device)[self.seg]
        self.cache_col = torch.tensor([col for _, col, _, _ in segments], device=device)[self.seg] + self.at
        # query j of segment s sees columns first_s .. col_s + j (padded queries: as its last real one)
        cols = torch.arange(self.lo, self.hi, device=device)
        j = torch.minimum(torch.arange(self.width, device=device)[None], lengths[:, None] - 1)  # [S, width]
        first = torch.tensor([f for _, _, _, f in segments], device=device)
        col = torch.tensor([c for _, c, _, _ in segments], device=device)
        seen = (cols[None, None] >= first[:, None, None]) & (cols[None, None] <= (col[:, None] + j)[..., None])
        bias = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill_(~seen, float("-inf"))[:, None]
        self.bias = bias if group == 1 else bias.repeat(1, 1, group, 1)  # rows as the grouped queries below

    def __call__(self, q, k, v, keys, values, scale: float, num_kv_heads: int):
        """Write ``k``, ``v`` ``[N, kv heads, d]`` into the cache and return the attention output ``[N, heads * d]``."""
        keys[self.cache_row, :, self.cache_col] = k.to(keys.dtype)
        values[self.cache_row, :, self.cache_col] = v.to(values.dtype)
        s, w, (n, heads, d) = self.count, self.width, q.shape
        group = heads // num_kv_heads
        padded = q.new_zeros((s, w, heads, d))
        padded[self.seg, self.at] = q
        # the query heads of each key/value head together: [S, kv heads, group * width, d]
        qg = padded.view(s, w, num_kv_heads, group, d).permute(0, 2, 3, 1, 4).reshape(s, num_kv_heads, group * w, d)
        window = slice(self.lo, self.hi)
        kw, vw = keys[self.rows, :, window], values[self.rows, :, window]
        scores = torch.add(self.bias, torch.matmul(qg, kw.transpose(2, 3)), alpha=scale)
        out = torch.matmul(scores.softmax(-1), vw)  # [S, kv heads, group * width, d]
        out = out.view(s, num_kv_heads, group, w, d).permute(0, 3, 1, 2, 4).reshape(s, w, heads * d)
        return out[self.seg, self.at]


@dataclass
class _Kept:
    """Key/values of one decoded row: ``tokens`` sit in ``cache`` row ``row`` from column ``start`` on."""

    tokens: tuple
    cache: list
    row: int
    start: int


class CachedDecoder:
    """Prefill and decode a batch of prompts with a preallocated key/value cache (see the module docstring).

    Args:
        model: a causal LM for which :func:`supports` is true (a peft wrapper is fine).
        fuse: fuse plain linear projections (copies of their weights; see ``_Layer``). The default
            fuses when the layers' weights are under 256 MB: beyond that, arithmetic dominates and the
            copies would cost memory for little.
    """

    def __init__(self, model, fuse: bool | None = None):
        if not supports(model):  # a look-alike would decode wrong numbers without a word
            raise ValueError(f"CachedDecoder: {type(model).__name__} is not a Llama-style decoder with full attention "
                             f"(model types {', '.join(LLAMA_LIKE)}); decode it with generate")
        decoder, head = _parts(model)
        self.decoder, self.head = decoder, head
        config = decoder.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
        if fuse is None:
            fuse = sum(p.numel() * p.element_size() for p in decoder.layers.parameters()) < 256 * 2**20
        self.layers = [_Layer(layer, fuse, (self.num_heads, self.num_kv_heads, self.head_dim))
                       for layer in decoder.layers]
        self.params = list(model.parameters())
        self._kept: list[_Kept] = []  # reusable by this call
        self._next: list[_Kept] = []  # made by this call, reusable by the next
        self._weights_stamp: tuple | None = None  # the weights' versions, dtypes and devices at the last check
        self.prefill_tokens = self.reused_tokens = 0  # prompt tokens computed / taken from kept key/values
        self._rope = None  # cos and signed sin by position, made per call
        self._final_eps = _rms_eps(decoder.norm)
        self._final_eps_t = None  # as a tensor on the weights' device (made with the fused weights)
        self.refreshes = 0  # how often the fused weights were rebuilt (a stack of them is rebuilt after)
        self._stack: tuple[tuple, _Stacked] | None = None  # the decoders of the last stacked call, their stack

    def _rotary(self, h, positions):
        """``(cos, signed sin)`` at flat ``positions [N]``, ``[N, 1, head_dim]``: from the table made for
        this call when the rotary embedding does not depend on the sequence length, else computed now."""
        if self._rope is not None:
            cos, sin = self._rope[0].index_select(0, positions), self._rope[1].index_select(0, positions)
        else:
            cos, sin = self.decoder.rotary_emb(h[None], positions[None])
            cos, sin = cos[0], torch.cat((-sin[0, :, : self.head_dim // 2], sin[0, :, self.head_dim // 2:]), dim=-1)
        return cos[:, None], sin[:, None]

    def _rope_table(self, size: int, dtype, device):
        """cos and signed sin for positions ``0..size-1`` (``None`` for length-dependent rotary types)."""
        if getattr(self.decoder.rotary_emb, "rope_type", "default") not in _STATIC_ROPE:
            return None
        positions = torch.arange(size, device=device)[None]
        cos, sin = self.decoder.rotary_emb(torch.empty(1, dtype=dtype, device=device), positions)
        half = self.head_dim // 2
        return cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)

    def _final_norm(self, h):
        return _norm(self.decoder.norm, self._final_eps_t, h)

    def logits(self, h):
        """LM head logits of a decode step's last hidden states (before the final norm)."""
        return _Layer.linear(self.head, self._final_norm(h))

    def _step(self, token, positions, bias, cache, col: int, stack: _Stacked | None = None, group=None):
        """One decode step: each row's ``token [B]`` at column ``col`` (its key/values written there);
        ``bias [B, kv heads, 1, columns]`` (contiguous; columns up to ``col`` are read) is added to the
        attention scores (-inf on padding). With ``stack``, the rows are its groups' (``group [B]``: each
        row's), group-major. Returns the logits ``[B, V]``."""
        h = stack.embed(token, group) if stack is not None else self.decoder.embed_tokens(token)
        cos, sin = self._rotary(h, positions)
        end, d = col + 1, self.head_dim
        rows = len(token) * self.num_kv_heads  # (row, key/value head) pairs: the batch of the products below
        bias = bias.view(rows, 1, -1)[..., :end]
        for lay, (keys, values) in zip(stack.layers if stack is not None else self.layers, cache):
            q, k, v = lay.qkv(h, cos, sin)
            keys[:, :, col], values[:, :, col] = k, v
            # one query per row: two batched products read the cache once (faster than SDPA's kernel
            # here), on 3D views (torch.matmul on 4D ones dispatches several more ops per call)
            qg = q.reshape(rows, -1, d)  # the query heads of each key/value head together
            scores = torch.baddbmm(bias, qg, keys[:, :, :end].view(rows, end, d).transpose(1, 2), alpha=lay.q_scale)
            out = torch.bmm(scores.softmax(-1), values[:, :, :end].view(rows, end, d)).view(len(token), -1)
            h = lay.finish(h, out)
        return stack.logits(h) if stack is not None else self.logits(h)

    def _prefill(self, ids, positions, segments, cache):
        """Run the prompt tokens ``ids [N]`` (flat, no padding) and write their key/values.

        ``segments`` are ``(row, col, n, first)``: the next ``n`` tokens are row ``row``'s columns
        ``[col, col + n)``, and attend to its columns from ``first`` on (the kept ones before ``col``
        are in the cache already). Returns the final hidden state of each segment's last token.
        """
        h = self.decoder.embed_tokens(ids)
        cos, sin = self._rotary(h, positions)
        batched = len(segments) > 1 and _Segments.fits(segments, self.num_heads)
        attend = _Segments(segments, ids.device, h.dtype, self.num_heads // self.num_kv_heads) if batched else None
        offsets = [0, *itertools.accumulate(n for _, _, n, _ in segments)][:-1]
        # a row at a time: causal with ``col - first`` kept keys before the first query (None: plain causal, its faster kernel)
        masks = [] if batched else [
            None if col == first else
            torch.arange(col + n - first, device=ids.device)[None] <= torch.arange(n, device=ids.device)[:, None] + (col - first)
            for _, col, n, first in segments]
        gqa = self.num_kv_heads != self.num_heads
        for lay, (keys, values) in zip(self.layers, cache):
            q, k, v = lay.qkv(h, cos, sin)
            if attend is not None:  # every segment in one batched product (a few tokens each, after the first turn)
                out = attend(q, k, v, keys, values, lay.q_scale, self.num_kv_heads)
            else:  # one at a time: SDPA's kernel, without a [tokens, keys] score matrix per segment
                outs = []
                for (row, col, n, first), o, mask in zip(segments, offsets, masks):
                    keys[row, :, col:col + n] = k[o:o + n].transpose(0, 1)
                    values[row, :, col:col + n] = v[o:o + n].transpose(0, 1)
                    out = F.scaled_dot_product_attention(
                        q[o:o + n].transpose(0, 1)[None], keys[row:row + 1, :, first:col + n],
                        values[row:row + 1, :, first:col + n], attn_mask=mask, is_causal=mask is None,
                        scale=lay.q_scale, enable_gqa=gqa)
                    outs.append(out[0].transpose(0, 1).reshape(n, -1))
                out = torch.cat(outs) if len(outs) > 1 else outs[0]
            h = lay.finish(h, out)
        last = torch.tensor([o + n - 1 for o, (_, _, n, _) in zip(offsets, segments)], device=ids.device)
        return self._final_norm(h[last])

    def _prefill_chunks(self, segments: list[tuple]) -> list[list[tuple]]:
        """The segments in consecutive groups, each holding at most ``PREFILL_FLOATS`` of its largest
        transient (the MLP's hidden layer over its tokens, or one row's attention scores): with
        SmolLM2-135M's shapes, 16 prompts of 820 tokens in two chunks peaked 1.00 GB above the weights
        instead of 1.18 GB, at the same speed. (The key/value cache, not this, is most of a long eval's memory.)"""
        chunks, size = [[]], 0
        for seg in segments:
            _, col, n, first = seg
            cost = n * max(self.intermediate, self.num_heads * (col + n - first))
            if chunks[-1] and size + cost > PREFILL_FLOATS:
                chunks.append([])
                size = 0
            chunks[-1].append(seg)
            size += cost
        return chunks

    # ---- key/values kept between calls -------------------------------------------------------------

    def _stamp(self) -> tuple:
        # versions tell in-place updates (an optimizer step, a load); dtype and device tell a .to()
        return tuple((p._version, p.dtype, p.device) for p in self.params)

    def new_call(self) -> None:
        """Start a new ``generate`` call: what the previous call decoded becomes reusable, older entries go."""
        self._kept, self._next = self._next, []

    def _check_weights(self) -> None:
        """After the weights changed (in-place updates bump tensor versions): rebuild the fused
        weights, and drop the kept key/values, which the old weights computed."""
        stamp = self._stamp()
        if stamp != self._weights_stamp:
            for lay in self.layers:
                lay.refresh()
            if self._final_eps is not None:
                self._final_eps_t = self.decoder.norm.weight.new_tensor([self._final_eps])
            self._kept, self._weights_stamp = [], stamp
            self.refreshes += 1

    def weights_changed(self) -> None:
        """Rebuild the fused weights and drop the kept key/values at the next call, whatever the versions say."""
        self._weights_stamp = None

    def forget(self) -> None:
        """Drop every kept key/value (frees their memory)."""
        self._kept, self._next = [], []

    def _reusable(self, prompts: list[tuple]) -> list[tuple[int, _Kept | None]]:
        """Per prompt, the longest kept sequence it starts with: ``(its length, the entry)`` or ``(0, None)``."""
        by_length: dict[int, dict[tuple, _Kept]] = {}
        for e in self._kept:
            by_length.setdefault(len(e.tokens), {})[e.tokens] = e
        lengths = sorted(by_length, reverse=True)
        out = []
        for p in prompts:
            # a prompt's last token is always computed: its hidden state predicts the first new token
            hit = next(((n, by_length[n][p[:n]]) for n in lengths if n < len(p) and p[:n] in by_length[n]), (0, None))
            out.append(hit)
        return out

    def decode(self, prompts: Sequence[Sequence[int]], pick: Callable, *, max_new_tokens: int,
               stop_ids: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate up to ``max_new_tokens`` per prompt.

        ``pick(logits [B, V]) -> (token [B, 1], logprob [B])`` chooses each next token. Returns the
        generated ids and their log-probabilities, ``[len(prompts), max_new_tokens]`` on the CPU;
        a row's entries after its first stop id are padding (``pad_id``, 0.0). A prompt that extends
        a sequence decoded by the previous ``generate`` call (see :meth:`new_call`) reuses its key/values.
        """
        return decode_views([self], prompts, [0] * len(prompts), pick, max_new_tokens=max_new_tokens,
                            stop_ids=stop_ids, pad_id=pad_id)

    def _stacked(self, decoders: list["CachedDecoder"]) -> _Stacked | None:
        """These decoders' weights stacked (made again after any of them rebuilt its fused weights),
        or None when they cannot run stacked (see :meth:`_Stacked.possible`)."""
        key = tuple(decoders)
        if self._stack is not None and self._stack[0] == key \
                and self._stack[1].refreshes == tuple(d.refreshes for d in decoders):
            return self._stack[1]
        self._stack = (key, _Stacked(decoders)) if _Stacked.possible(decoders) else None
        return self._stack[1] if self._stack is not None else None

    @staticmethod
    def _copy_in(cache, row: int, col: int, source, source_row: int, source_col: int, n: int) -> None:
        """Copy ``n`` columns of key/values from ``source`` (a row, a first column) into ``cache`` at ``(row, col)``."""
        for (k, v), (sk, sv) in zip(cache, source):
            k[row, :, col:col + n] = sk[source_row, :, source_col:source_col + n]
            v[row, :, col:col + n] = sv[source_row, :, source_col:source_col + n]

    @staticmethod
    def _shared_prefix(prompts: list[tuple], have: list[int]) -> tuple:
        """The prefix every prompt starts with (a system prompt, the tool list), when at least two prompts
        would otherwise compute ``SHARED_PREFIX_MIN`` or more of its tokens each; else ``()``."""
        n = min(len(p) for p in prompts) - 1  # a prompt's last token is always its own (it predicts the first new one)
        first = prompts[0]
        for p in prompts[1:]:
            n = next((i for i, (a, b) in enumerate(zip(first[:n], p)) if a != b), n)
        if n >= SHARED_PREFIX_MIN and sum(h + SHARED_PREFIX_MIN <= n for h in have) >= 2:
            return first[:n]
        return ()

    @staticmethod
    def _keep_finished(gone, live, cache, width: int, fed: int, prompt_lengths: list[int]) -> list[tuple]:
        """Copies of the key/values the finished batch rows ``gone`` have written (columns from the
        first of their prompts to the last token fed), for the next call's reuse. Copying only these,
        rather than keeping a reference to the whole batch cache, lets that cache be freed when the
        live rows move to a smaller one: a long evaluation's memory is mostly these caches."""
        first_col = width - max(prompt_lengths[b] for b in gone.tolist())
        used = slice(first_col, width + fed)
        part = [(k[:, :, used].index_select(0, gone), v[:, :, used].index_select(0, gone)) for k, v in cache]
        return [(int(live[b]), part, j, fed, first_col) for j, b in enumerate(gone.tolist())]


def decode_views(decoders: Sequence[CachedDecoder], prompts: Sequence[Sequence[int]], views: Sequence[int],
                 pick: Callable, *, max_new_tokens: int, stop_ids: Sequence[int],
                 pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`CachedDecoder.decode` for prompts of several views at once: prompt ``i`` runs with the weights
    of ``decoders[views[i]]`` (a student and its frozen teacher, say), every row in one decode loop.

    Each view prefills its own prompts; the decode steps run all rows together with the views' weights
    stacked (:class:`_Stacked`), so a step costs little more than one view's, and the loop lasts as
    long as the longest row of any view rather than the sum of two loops. Every view gets the same
    number of rows: a view with fewer is padded with one-token rows whose output is dropped (with two
    views that at most doubles the rows, against a whole loop's per-step costs saved). Once one
    view's rows have all stopped, the other goes on with its own decoder. Where the weights cannot be stacked
    (see :meth:`_Stacked.possible`: LoRA layers, another dtype than float32, per-head norms, other
    arithmetic, models over ``STACK_BYTES``), each view decodes on its own.

    It runs in inference mode: without autograd's view and version bookkeeping on every op, a decode
    step of the embedded model took 10-17% less time than under ``no_grad`` (batch 1 and 16, 64 and 320
    cached columns). The results are returned as ordinary tensors.
    """
    with torch.inference_mode():
        ids, lps = _decode_views(decoders, prompts, views, pick, max_new_tokens=max_new_tokens,
                                 stop_ids=stop_ids, pad_id=pad_id)
    return ids.clone(), lps.clone()


def _decode_views(decoders: Sequence[CachedDecoder], prompts: Sequence[Sequence[int]], views: Sequence[int],
                  pick: Callable, *, max_new_tokens: int, stop_ids: Sequence[int],
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = len(decoders)
    if len(views) != len(prompts) or any(not 0 <= v < groups for v in views):
        raise ValueError(f"decode_views: one view in 0..{groups - 1} per prompt, got {list(views)!r}")
    if not prompts:
        return torch.zeros((0, max_new_tokens), dtype=torch.long), torch.zeros((0, max_new_tokens))
    for d in decoders:
        d._check_weights()
    present = sorted(set(views))
    stack = decoders[0]._stacked(list(decoders)) if len(present) > 1 else None
    if len(present) > 1 and stack is None:  # one loop per view
        ids = torch.full((len(prompts), max_new_tokens), pad_id, dtype=torch.long)
        lps = torch.zeros((len(prompts), max_new_tokens))
        for v in present:
            rows = [i for i, w in enumerate(views) if w == v]
            ids[rows], lps[rows] = decode_views([decoders[v]], [prompts[i] for i in rows], [0] * len(rows), pick,
                                                max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id)
        return ids, lps
    if stack is None:  # one view: its decoder runs alone
        decoders, views, groups = [decoders[present[0]]], [0] * len(prompts), 1
    first = decoders[0]
    device = first.head.weight.device
    n = len(prompts)
    slots, row_slot, row_out = _layout(prompts, views, groups, stack is not None)
    firsts = [p if p is not None else (pad_id,) for _, p in slots]
    slot_view = [v for v, _ in slots]
    reuse = [None] * len(slots)
    for v in range(groups):
        mine = [s for s in range(len(slots)) if slot_view[s] == v and slots[s][1] is not None]
        for s, hit in zip(mine, decoders[v]._reusable([firsts[s] for s in mine])):
            reuse[s] = hit
    reuse = [hit or (0, None) for hit in reuse]
    width = max(len(p) for p in firsts)
    batch, total = len(slots), width + max_new_tokens
    dtype = first.decoder.embed_tokens.weight.dtype
    shape = (batch, first.num_kv_heads, total, first.head_dim)
    # zeros, not empty: padding columns are read (with zero weight) and must hold finite numbers
    cache = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
             for _ in first.layers]
    starts = [width - len(p) for p in firsts]  # rows are left-padded: a prompt ends at column ``width``
    have = [k for k, _ in reuse]  # each prompt's leading tokens whose key/values are in the cache
    for r, (k, entry) in enumerate(reuse):
        if k:
            CachedDecoder._copy_in(cache, r, starts[r], entry.cache, entry.row, entry.start, k)
            decoders[slot_view[r]].reused_tokens += k
    logits = []
    for v, d in enumerate(decoders):
        d._rope = d._rope_table(total, dtype, device)
        mine = [s for s in range(len(slots)) if slot_view[s] == v]
        real = [s for s in mine if slots[s][1] is not None]
        shared = d._shared_prefix([firsts[s] for s in real], [have[s] for s in real]) if real else ()
        if shared:  # computed once, copied into every row that lacks it
            k = len(shared)
            one = (1, d.num_kv_heads, k, d.head_dim)
            part = [(torch.empty(one, dtype=dtype, device=device), torch.empty(one, dtype=dtype, device=device))
                    for _ in d.layers]  # every column is written
            d._prefill(torch.tensor(shared, device=device), torch.arange(k, device=device), [(0, 0, k, 0)], part)
            lacking = [s for s in real if have[s] < k]
            for s in lacking:
                CachedDecoder._copy_in(cache, s, starts[s], part, 0, 0, k)
                have[s] = k
            d.prefill_tokens += k
            d.reused_tokens += k * (len(lacking) - 1)
        d.prefill_tokens += sum(len(firsts[s]) - have[s] for s in mine)
        # each row computes only the tokens it does not have: no padding, so no arithmetic on it
        segments = [(s, starts[s] + have[s], len(firsts[s]) - have[s], starts[s]) for s in mine]
        for chunk in d._prefill_chunks(segments):
            ids = torch.tensor([t for s, _, _, _ in chunk for t in firsts[s][have[s]:]], device=device)
            positions = torch.tensor([i for s, _, _, _ in chunk for i in range(have[s], len(firsts[s]))], device=device)
            logits.append(_Layer.linear(d.head, d._prefill(ids, positions, chunk, cache)))
    logits = torch.cat(logits)  # slots are view-major, so this is slot order
    lengths = torch.tensor([len(p) for p in firsts], device=device)
    # decoding adds this to the attention scores: -inf on padding, 0 elsewhere (a column is read only
    # once its token is written, so the generated ones need no masking); one row per key/value head
    cols = torch.arange(total, device=device)
    bias = torch.zeros((batch, first.num_kv_heads, 1, total), dtype=dtype, device=device).masked_fill_(
        (cols < torch.tensor(starts, device=device)[:, None])[:, None, None], float("-inf"))
    if row_slot != list(range(batch)):  # prompts that were the same share one prefill; padding rows
        index = torch.tensor(row_slot, device=device)
        cache = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]
        logits, bias, lengths = logits[index], bias[index], lengths[index]
    out_ids = torch.full((n + 1, max_new_tokens), pad_id, dtype=torch.long, device=device)  # row n: the sink
    out_lps = torch.zeros((n + 1, max_new_tokens), device=device)
    live = torch.tensor(row_out, device=device)  # output row of each batch row
    group = torch.tensor([slot_view[s] for s in row_slot], device=device)  # view of each batch row
    stops = torch.tensor(list(stop_ids), device=device)
    done = live == n  # padding rows are done from the start
    decoded = []  # (output row, its cache, its batch row, generated tokens fed so far, the cache's first column)
    check = 1 if device.type == "cpu" else 8  # a host sync per check costs on accelerators
    step, tried = 0, -1  # tried: the live count at the last drop considered
    for step in range(max_new_tokens):
        token, logprob = pick(logits.float())
        token = token.view(-1)
        out_ids[live, step] = token
        out_lps[live, step] = logprob
        stopped = torch.isin(token, stops) | done
        if step + 1 == max_new_tokens:
            break
        if (step + 1) % check == 0:
            remaining = int((~stopped).sum())
            if remaining == 0:
                break
            if remaining <= len(live) // 2 and remaining != tried:  # drop finished rows (the copy is amortised)
                tried = remaining
                keep, left = _rows_to_keep(stopped, group, groups if stack is not None else 1)
                if len(keep) <= len(live) * 3 // 4:  # (fillers that equalise the views may leave too few to drop)
                    if left is not None:  # one view still runs (all its rows kept): on with its own decoder
                        stack, first = None, decoders[left]
                    gone = torch.ones(len(live), dtype=torch.bool, device=device)
                    gone[keep] = False
                    gone = (gone & (live != n)).nonzero().view(-1)  # padding rows keep nothing
                    if len(gone):
                        decoded += CachedDecoder._keep_finished(gone, live, cache, width, step, lengths.tolist())
                    live, token, stopped, group = live[keep], token[keep], stopped[keep], group[keep]
                    cache = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in cache]
                    bias, lengths = bias[keep], lengths[keep]
        done = stopped
        col = width + step
        logits = first._step(token, lengths + step, bias, cache, col, stack, group)
    decoded += [(row, cache, b, step, 0) for b, row in enumerate(live.tolist()) if row != n]
    # entries after a row's first stop are whatever was sampled while it waited: clear them
    out_ids, out_lps = out_ids[:n], out_lps[:n]
    is_stop = torch.isin(out_ids, stops).long()
    after = (is_stop.cumsum(1) - is_stop) > 0
    out_ids[after], out_lps[after] = pad_id, 0.0
    out_ids, out_lps = out_ids.cpu(), out_lps.cpu()
    generated = out_ids.tolist()
    stop_set = set(int(t) for t in stop_ids)
    for row, row_cache, b, fed, first_col in decoded:
        gen = generated[row]
        cut = next((j + 1 for j, t in enumerate(gen) if t in stop_set), len(gen))
        prompt = tuple(prompts[row])
        decoders[views[row]]._next.append(
            _Kept(prompt + tuple(gen[:min(fed, cut)]), row_cache, b, width - len(prompt) - first_col))
    return out_ids, out_lps


def _layout(prompts: Sequence[Sequence[int]], views: Sequence[int], groups: int, stacked: bool):
    """Where each prompt goes in :func:`decode_views`: ``(slots, row_slot, row_out)``.

    ``slots`` are what is prefilled, ``(view, prompt)``, view-major: each distinct prompt of a view once
    (the k samples of a task share one prefill) and, when ``stacked``, ``(view, None)``: a one-token
    padding prompt for a view with fewer rows than another. Decode rows are view-major too (so are the
    stacked weights' groups): row ``r`` starts from slot ``row_slot[r]`` and writes output row
    ``row_out[r]``, ``len(prompts)`` for a padding row (a sink, dropped).

    Example:
        >>> _layout([[1], [2], [1], [3]], [0, 0, 0, 1], 2, stacked=True)
        ([(0, (1,)), (0, (2,)), (1, (3,)), (1, None)], [0, 1, 0, 2, 3, 3], [0, 1, 2, 3, 4, 4])
    """
    n = len(prompts)
    per_view = [[i for i in range(n) if views[i] == v] for v in range(groups)]
    rows_per_view = max(map(len, per_view))
    slot_of: dict[tuple, int] = {}
    for v, rows in enumerate(per_view):
        for i in rows:
            slot_of.setdefault((v, tuple(prompts[i])), len(slot_of))
        if stacked and len(rows) < rows_per_view:
            slot_of[(v, None)] = len(slot_of)
    if not stacked:
        return list(slot_of), [slot_of[(views[i], tuple(p))] for i, p in enumerate(prompts)], list(range(n))
    row_slot, row_out = [], []
    for v, rows in enumerate(per_view):
        pad = rows_per_view - len(rows)
        row_slot += [slot_of[(v, tuple(prompts[i]))] for i in rows] + [slot_of.get((v, None))] * pad
        row_out += rows + [n] * pad
    return list(slot_of), row_slot, row_out


def _rows_to_keep(stopped, group, groups: int) -> tuple[torch.Tensor, int | None]:
    """Batch rows that go on after dropping finished ones, and the view left when only one still runs
    (else None). The live rows; with several views running stacked (each needs as many rows), also as
    many finished rows of the views with fewer as make their counts equal."""
    if groups == 1:
        return (~stopped).nonzero().view(-1), None
    per_view = [((group == v) & ~stopped).nonzero().view(-1) for v in range(groups)]
    running = [v for v, rows in enumerate(per_view) if len(rows)]
    if len(running) == 1:
        return per_view[running[0]], running[0]
    count = max(len(rows) for rows in per_view)
    keep = []
    for v, rows in enumerate(per_view):
        filler = ((group == v) & stopped).nonzero().view(-1)[: count - len(rows)]
        keep += [rows, filler]
    return torch.cat(keep), None
