"""Cached decoding for Llama-family decoders: one forward step per generated token, nothing more.

``transformers``' ``generate`` spends most of its time per token on bookkeeping (mask and cache
objects, output wrappers, logits processors, stopping criteria) that costs far more than the
arithmetic of a small model. :class:`CachedDecoder` runs the model's own modules (norms,
projections, rotary embedding, MLP: so LoRA adapters, ``disable_adapter`` and any dtype behave as in
the model) layer by layer, with a key/value cache allocated once per batch and written in place.

Supported: decoders laid out like Llama (Llama, Qwen2, Qwen3, Mistral without sliding windows,
SmolLM2...): ``embed_tokens``, ``layers[i].{input_layernorm, self_attn.{q,k,v,o}_proj[, q_norm,
k_norm], post_attention_layernorm, mlp}``, ``norm``, ``rotary_emb``. :func:`supports` says whether
a model is one; the engine falls back to ``generate`` otherwise.

Rows are left-padded to a common width, so every row writes the same cache column at each step;
padded keys are masked. Identical prompts (the k samples of one task) are prefilled once and their
cache rows copied. Rows that have stopped are dropped from the batch once half of it has stopped;
the columns they wrote are copied out, so the larger cache is freed as the live rows move on.
The key/values of every decoded row are kept until the next call (:meth:`CachedDecoder.new_call`):
a prompt there that extends one of those sequences (a multi-turn episode's next turn: its context,
the turn just generated, then the observation) copies them and computes only the rest.

The step runs eager: with the embedded model at batch 16 on a CPU (torch 2.13, inductor), a
step compiled with ``torch.compile`` measured 7x slower per token than the same step eager, and
compiled layers (cache writes left eager) 1.3x slower.

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

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["CachedDecoder", "supports"]

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


def supports(model) -> bool:
    """Whether :class:`CachedDecoder` can run ``model`` (a Llama-style decoder with full attention)."""
    decoder, _ = _parts(model)
    if decoder is None:
        return False
    config = decoder.config
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()):
        return False  # sliding-window layers need a rolling cache
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        return False
    return getattr(config, "_attn_implementation", "sdpa") in ("sdpa", "eager")


# rotary types whose cos/sin depend on the position only (not on how long the sequence gets)
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")
PREFILL_FLOATS = 2**26  # the prefill runs in row chunks whose largest transient stays under this (256 MB in float32)


def _plain_linear(module) -> bool:
    return type(module) is torch.nn.Linear  # not a LoRA or quantised layer: its weight is the whole map


def _rms_eps(module) -> float | None:
    """The epsilon of a plain RMSNorm module (computed here in one fused op), None for anything else."""
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    plain = type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), torch.Tensor)
    return float(eps) if plain and isinstance(eps, float) else None


class _Layer:
    """One decoder layer's modules, with its projections fused where they are plain linear maps.

    Fusing q/k/v (and gate/up) turns seven matrix products per layer into four; for a small model,
    whose every op costs more in dispatch than in arithmetic, that is most of a decode step. The fused
    weights are copies, rebuilt when the weights have changed (an optimizer step, a load).
    """

    def __init__(self, layer, fuse: bool):
        self.layer, self.attn, self.mlp = layer, layer.self_attn, layer.mlp
        a, m = self.attn, self.mlp
        qkv = (a.q_proj, a.k_proj, a.v_proj)
        # fused only when every part is a plain map and their biases are all there or all absent
        self.fuse_qkv = fuse and all(map(_plain_linear, qkv)) and len({x.bias is None for x in qkv}) == 1
        self.fuse_mlp = fuse and all(hasattr(m, x) for x in ("gate_proj", "up_proj", "down_proj", "act_fn")) \
            and all(_plain_linear(x) and x.bias is None for x in (m.gate_proj, m.up_proj))
        self.norm_eps = (_rms_eps(layer.input_layernorm), _rms_eps(layer.post_attention_layernorm))
        self.qkv_w = self.qkv_b = self.gate_up_w = None

    def refresh(self) -> None:
        """Build the fused weights from the current ones."""
        a, m = self.attn, self.mlp
        if self.fuse_qkv:
            self.qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()
            if a.q_proj.bias is not None:
                self.qkv_b = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach()
        if self.fuse_mlp:
            self.gate_up_w = torch.cat([m.gate_proj.weight, m.up_proj.weight]).detach()

    def norm(self, which: int, x):
        module = (self.layer.input_layernorm, self.layer.post_attention_layernorm)[which]
        eps = self.norm_eps[which]
        if eps is None or x.dtype != torch.float32:  # other dtypes: the module's own up-cast arithmetic
            return module(x)
        return F.rms_norm(x, (x.shape[-1],), module.weight, eps)

    @staticmethod
    def linear(module, x):
        """``module(x)``; for a plain linear map, without the module call's hooks machinery."""
        return F.linear(x, module.weight, module.bias) if _plain_linear(module) else module(x)

    def mlp_forward(self, x):
        if not self.fuse_mlp:
            return self.mlp(x)
        gate, up = F.linear(x, self.gate_up_w).chunk(2, dim=-1)
        return self.linear(self.mlp.down_proj, self.mlp.act_fn(gate) * up)


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
        decoder, head = _parts(model)
        if decoder is None:
            raise ValueError(f"CachedDecoder: {type(model).__name__} is not a Llama-style decoder")
        self.decoder, self.head = decoder, head
        config = decoder.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
        if fuse is None:
            fuse = sum(p.numel() * p.element_size() for p in decoder.layers.parameters()) < 256 * 2**20
        self.layers = [_Layer(layer, fuse) for layer in decoder.layers]
        self.params = list(model.parameters())
        self._kept: list[_Kept] = []  # reusable by this call
        self._next: list[_Kept] = []  # made by this call, reusable by the next
        self._weights_stamp: tuple | None = None  # tensor versions of the weights at the last check
        self.prefill_tokens = self.reused_tokens = 0  # prompt tokens computed / taken from kept key/values
        self._rope = None  # cos and signed sin by position, made per call

    def _layer(self, i, lay: _Layer, h, cos, sin, mask, cache, col: int, write):
        """One decoder layer over columns ``[col, col + width)``; their keys/values go into ``cache``
        (only where ``write`` is true, when given: the other columns hold kept key/values)."""
        attn = lay.attn
        batch, width, _ = h.shape
        x = lay.norm(0, h)
        nq, nkv = self.num_heads, self.num_kv_heads
        if lay.fuse_qkv:
            qkv = F.linear(x, lay.qkv_w, lay.qkv_b).view(batch, width, nq + 2 * nkv, self.head_dim).transpose(1, 2)
            q, k, v = qkv.split((nq, nkv, nkv), dim=1)
        else:
            q = attn.q_proj(x).view(batch, width, -1, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(batch, width, -1, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(batch, width, -1, self.head_dim).transpose(1, 2)
        # the rotary embedding: x*cos + rotate_half(x)*sin, with rotate_half's sign folded into ``sin``
        half = self.head_dim // 2
        if hasattr(attn, "q_norm"):  # Qwen3: norms on each head before the rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        elif lay.fuse_qkv:  # rotate queries and keys in one go
            qk = qkv[:, : nq + nkv]
            qk = qk * cos + qk.roll(half, -1) * sin
            q, k = qk.split((nq, nkv), dim=1)
        if not lay.fuse_qkv or hasattr(attn, "q_norm"):
            q = q * cos + q.roll(half, -1) * sin
            k = k * cos + k.roll(half, -1) * sin
        keys, values = cache[i]
        end = col + width
        if write is None:
            keys[:, :, col:end], values[:, :, col:end] = k, v
        else:
            keys[:, :, col:end] = torch.where(write, k, keys[:, :, col:end])
            values[:, :, col:end] = torch.where(write, v, values[:, :, col:end])
        if mask.dtype == torch.bool:  # a block of queries (prefill)
            out = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
                                                 scale=attn.scaling, enable_gqa=nkv != nq)
        else:  # one query per row: two batched products read the cache once (faster than SDPA's kernel here)
            qg = q.reshape(batch, nkv, nq // nkv, self.head_dim)  # the query heads of each key/value head together
            scores = torch.matmul(qg, keys[:, :, :end].transpose(2, 3)) * attn.scaling + mask
            out = torch.matmul(scores.softmax(-1), values[:, :, :end]).view(batch, nq, 1, self.head_dim)
        h = h + lay.linear(attn.o_proj, out.transpose(1, 2).reshape(batch, width, -1))
        return h + lay.mlp_forward(lay.norm(1, h))

    def _rotary(self, h, positions):
        """``(cos, signed sin)`` at ``positions``, ``[B, 1, W, head_dim]``: from the table made for this
        call when the rotary embedding does not depend on the sequence length, else computed now."""
        if self._rope is not None:
            cos, sin = self._rope[0][positions], self._rope[1][positions]
        else:
            cos, sin = self.decoder.rotary_emb(h, positions)
            sin = torch.cat((-sin[..., : self.head_dim // 2], sin[..., self.head_dim // 2:]), dim=-1)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def _rope_table(self, size: int, dtype, device):
        """cos and signed sin for positions ``0..size-1`` (``None`` for length-dependent rotary types)."""
        if getattr(self.decoder.rotary_emb, "rope_type", "default") not in _STATIC_ROPE:
            return None
        positions = torch.arange(size, device=device)[None]
        cos, sin = self.decoder.rotary_emb(torch.empty(1, dtype=dtype, device=device), positions)
        half = self.head_dim // 2
        return cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)

    def _forward(self, ids, positions, mask, cache, col: int, write=None):
        """Run ``ids`` (the columns from ``col`` on) and return the last column's hidden states ``[B, hidden]``."""
        h = self.decoder.embed_tokens(ids)
        cos, sin = self._rotary(h, positions)
        for i, lay in enumerate(self.layers):
            h = self._layer(i, lay, h, cos, sin, mask, cache, col, write)
        return self.decoder.norm(h[:, -1])

    def _prefill_chunks(self, batch: int, queries: int, keys: int) -> list[tuple[int, int]]:
        """Row ranges for the prefill, each holding at most ``PREFILL_FLOATS`` of its largest transient
        (the MLP's hidden layer or the attention scores), which grow with the batch: with SmolLM2-135M's
        shapes, 16 prompts of 820 tokens in two chunks peaked 1.00 GB above the weights instead of
        1.18 GB, at the same speed. (The key/value cache, not this, is most of a long eval's memory.)"""
        per_row = max(1, queries * max(self.intermediate, self.num_heads * keys))
        rows = max(1, PREFILL_FLOATS // per_row)
        return [(a, min(a + rows, batch)) for a in range(0, batch, rows)]

    # ---- key/values kept between calls -------------------------------------------------------------

    def _stamp(self) -> tuple:
        return tuple(p._version for p in self.params)

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
            self._kept, self._weights_stamp = [], stamp

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

    @torch.no_grad()
    def decode(self, prompts: Sequence[Sequence[int]], pick: Callable, *, max_new_tokens: int,
               stop_ids: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate up to ``max_new_tokens`` per prompt.

        ``pick(logits [B, V]) -> (token [B, 1], logprob [B])`` chooses each next token. Returns the
        generated ids and their log-probabilities, ``[len(prompts), max_new_tokens]`` on the CPU;
        a row's entries after its first stop id are padding (``pad_id``, 0.0). A prompt that extends
        a sequence decoded by the previous ``generate`` call (see :meth:`new_call`) reuses its key/values.
        """
        device = self.head.weight.device
        self._check_weights()
        unique: dict[tuple, int] = {}
        rows = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        firsts = list(unique)
        reuse = self._reusable(firsts)
        width = max(len(p) for p in firsts)
        batch, total = len(firsts), width + max_new_tokens
        dtype = self.decoder.embed_tokens.weight.dtype
        shape = (batch, self.num_kv_heads, total, self.head_dim)
        # zeros, not empty: padding columns are read (with zero weight) and must hold finite numbers
        cache = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                 for _ in self.layers]
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        valid = torch.zeros((batch, total), dtype=torch.bool)
        kept = torch.zeros((batch, width), dtype=torch.bool)
        fresh = width  # the first column some row must compute
        for r, (p, (n, entry)) in enumerate(zip(firsts, reuse)):
            start = width - len(p)
            ids[r, start:] = torch.tensor(p, dtype=torch.long)
            valid[r, start:] = True
            fresh = min(fresh, start + n)
            if n:
                kept[r, start:start + n] = True
                for (k, v), (ek, ev) in zip(cache, entry.cache):
                    k[r, :, start:start + n] = ek[entry.row, :, entry.start:entry.start + n]
                    v[r, :, start:start + n] = ev[entry.row, :, entry.start:entry.start + n]
        ids, valid, kept = ids.to(device), valid.to(device), kept.to(device)
        self.reused_tokens += sum(n for n, _ in reuse)
        self.prefill_tokens += sum(len(p) - n for p, (n, _) in zip(firsts, reuse))
        lengths = valid[:, :width].sum(1)
        positions = (valid[:, :width].long().cumsum(1) - 1).clamp(min=0)
        self._rope = self._rope_table(max(len(p) for p in firsts) + max_new_tokens, dtype, device)
        # columns [fresh, width) are computed; each query sees its row's tokens up to itself, a padded one itself only
        q_cols = torch.arange(fresh, width, device=device)[:, None]
        k_cols = torch.arange(width, device=device)[None, :]
        mask = ((k_cols <= q_cols) & valid[:, None, :width]) | (k_cols == q_cols)
        write = (~kept[:, fresh:])[:, None, :, None] if bool(kept[:, fresh:].any()) else None
        hidden = torch.cat([self._forward(ids[a:b, fresh:], positions[a:b, fresh:], mask[a:b, None],
                                          [(k[a:b], v[a:b]) for k, v in cache], fresh,
                                          None if write is None else write[a:b])
                            for a, b in self._prefill_chunks(batch, width - fresh, width)])
        # decoding adds this to the attention scores: -inf on padding, 0 on tokens (filled in as they come)
        bias = torch.zeros(valid.shape, dtype=dtype, device=device).masked_fill_(~valid, float("-inf"))
        if batch < len(prompts):  # prompts that were the same share one prefill
            index = torch.tensor(rows, device=device)
            cache = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]
            hidden, bias, lengths = hidden[index], bias[index], lengths[index]
        n = len(prompts)
        out_ids = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
        out_lps = torch.zeros((n, max_new_tokens), device=device)
        live = torch.arange(n, device=device)  # original row of each batch row
        stops = torch.tensor(list(stop_ids), device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        decoded = []  # (original row, its cache, its batch row, generated tokens fed so far, the cache's first column)
        check = 1 if device.type == "cpu" else 8  # a host sync per check costs on accelerators
        for step in range(max_new_tokens):
            token, logprob = pick(self.head(hidden).float())
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
                if remaining <= len(live) // 2:  # drop finished rows (the copy is amortised)
                    decoded += self._keep_finished(stopped.nonzero().view(-1), live, cache, width, step,
                                                   [len(firsts[rows[r]]) for r in live.tolist()])
                    keep = (~stopped).nonzero().view(-1)
                    live, token, stopped = live[keep], token[keep], stopped[keep]
                    cache = [(k.index_select(0, keep), v.index_select(0, keep)) for k, v in cache]
                    bias, lengths = bias[keep], lengths[keep]
            done = stopped
            col = width + step
            bias[:, col] = 0.0
            mask = bias[:, None, None, :col + 1]
            hidden = self._forward(token[:, None], (lengths + step)[:, None], mask, cache, col)
        decoded += [(row, cache, b, step, 0) for b, row in enumerate(live.tolist())]
        # entries after a row's first stop are whatever was sampled while it waited: clear them
        is_stop = torch.isin(out_ids, stops).long()
        after = (is_stop.cumsum(1) - is_stop) > 0
        out_ids[after], out_lps[after] = pad_id, 0.0
        out_ids, out_lps = out_ids.cpu(), out_lps.cpu()
        generated = out_ids.tolist()
        stop_set = set(int(t) for t in stop_ids)
        for row, row_cache, b, fed, first_col in decoded:
            gen = generated[row]
            cut = next((j + 1 for j, t in enumerate(gen) if t in stop_set), len(gen))
            prompt = firsts[rows[row]]
            self._next.append(_Kept(prompt + tuple(gen[:min(fed, cut)]), row_cache, b, width - len(prompt) - first_col))
        return out_ids, out_lps

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
