"""Scoring trajectories: logits and log-probabilities at action positions only.

Every algorithm needs, for a list of ``(input_ids, action_mask)`` views, the model's next-token
distribution at the positions that predict action tokens. Computing the LM head only there (not on
every prompt and observation position) keeps memory at ``num_action_tokens x vocab`` instead of
``batch x length x vocab``, which matters with 150k-token vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

View = tuple[list[int], list[int]]


@dataclass
class ActionLogits:
    """Logits at the positions predicting action tokens, flattened over the batch.

    ``logits[k]`` predicts ``targets[k]``, the k-th action token overall, which belongs to
    sequence ``seq[k]``. ``counts[i]`` is the number of action tokens of sequence i.
    """

    logits: torch.Tensor  # [N, V]
    targets: torch.Tensor  # [N]
    seq: torch.Tensor  # [N]
    counts: torch.Tensor  # [B]

    def token_logprobs(self, temperature: float = 1.0) -> torch.Tensor:
        """log p(target) per action token, under ``softmax(logits / temperature)``."""
        logits = self.logits if temperature in (0, 1.0) else self.logits / temperature
        return torch.gather(F.log_softmax(logits.float(), dim=-1), 1, self.targets[:, None]).squeeze(1)

    def per_sequence(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a per-token quantity over each sequence's action tokens -> ``[B]``."""
        out = torch.zeros(len(self.counts), dtype=values.dtype, device=values.device)
        return out.index_add(0, self.seq, values)

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Per-token values grouped by sequence."""
        return list(torch.split(values, self.counts.tolist()))


def _decoder_and_head(model):
    """The transformer body (returns normalised hidden states) and the LM head, peft-aware."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(base, "get_decoder", None)
    decoder = get_decoder() if get_decoder is not None else None
    get_head = getattr(base, "get_output_embeddings", None)
    return decoder, (get_head() if get_head is not None else None)


def length_groups(lengths: list[int], overhead: int = 128) -> list[list[int]]:
    """Split sequences into groups of similar length, each run as one right-padded batch.

    Minimises the padded tokens of all groups plus ``overhead`` token-equivalents per extra group
    (the fixed cost of one more forward), over groups of consecutive lengths in sorted order
    (exact, by dynamic programming). Returns indices into ``lengths``, shortest group first.

    Example:
        >>> length_groups([100, 400, 110, 390, 105])
        [[0, 4, 2], [3, 1]]
        >>> length_groups([100, 101, 102])
        [[0, 1, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted sequences
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # the last group is sorted positions i..j-1, padded to the longest
            cost = best[i] + (j - i) * lengths[order[j - 1]] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


SHARED_PREFIX_MIN = 32  # tokens: a shorter prefix shared between views is scored with each of them
PACK_RATIO = 4.0  # a packed row's continuations add up to at most this many times its prefix (see shared_prefix_rows)


def shared_prefix_rows(sequences: list[list[int]], ratio: float = PACK_RATIO) -> list[tuple[int, list[int]]]:
    """Batch rows for ``sequences``: ``(prefix length, members)``, the members' shared prefix run once.

    Views of one task start alike (a PBSD pair's y+ and y- share the prompt of their view; GRPO's K
    samples too). Sequences with a common prefix of at least ``SHARED_PREFIX_MIN`` tokens go into one
    row: the prefix, then each member's continuation, which attends to the prefix and to itself only.
    A packed row's attention runs with a mask over the whole row, which costs more than the members'
    causal attention apart, the more so the longer the continuations are next to the prefix; so a row
    takes members while their continuations add up to at most ``ratio`` times the prefix. (Scoring
    forward and backward with the embedded model on a CPU, 4 prompts of P tokens with K continuations
    of c tokens each: packed rows were 1.6x faster at P=500, c=50, K=2 and at P=135, c=60, K=8, 1.2x at
    P=135, c=122, K=2, even at P=300, c=300, K=2 or 4, and slower at 8 times the prefix or more:
    0.91x at P=50, c=200, K=2.) A sequence alone in its row has prefix length 0.

    Example:
        >>> prompt = list(range(100))
        >>> shared_prefix_rows([prompt + [1, 2], [7] * 50, prompt + [3]])
        [(100, [0, 2]), (0, [1])]
    """
    order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
    rows: list[tuple[int, list[int]]] = []
    members: list[int] = []
    prefix = 0
    for i in order:
        ids = sequences[i]
        if members:
            last = sequences[members[-1]]
            common = next((k for k, (a, b) in enumerate(zip(last, ids)) if a != b), min(len(last), len(ids)))
            p = min(prefix, common, len(ids) - 1)  # every member keeps at least one token of its own
            # joining saves the newcomer's p tokens, but a shorter prefix runs prefix - p more per member
            saves = p - (len(members) - 1) * (prefix - p)
            if p >= SHARED_PREFIX_MIN and saves > 0 and sum(len(sequences[m]) - p for m in members + [i]) <= ratio * p:
                members.append(i)
                prefix = p
                continue
            rows.append((prefix if len(members) > 1 else 0, members))
        members, prefix = [i], len(ids) - 1
    if members:
        rows.append((prefix if len(members) > 1 else 0, members))
    return rows


def _row_length(views: list[View], row: tuple[int, list[int]]) -> int:
    prefix, members = row
    return prefix + sum(len(views[m][0]) - prefix for m in members)


def _packable(model) -> bool:
    """Whether ``model`` scores a packed row right: a Llama-style decoder with full attention whose forward
    takes a custom 4D mask and position ids (sdpa or eager attention; see :func:`pbsd_agents.decoding.supports`)."""
    from ..decoding import supports

    return supports(model)


def _run_group(model, views: list[View], rows: list[tuple[int, list[int]]], pad_id: int,
               device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits [N, V], targets [N], view [N])`` at the action positions of one right-padded batch of
    ``rows`` (see :func:`shared_prefix_rows`)."""
    length = max(_row_length(views, row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    segment = torch.full((len(rows), length), -1, dtype=torch.long)  # 0: a prefix or a lone view; k: continuation k
    flat, targets, view_of = [], [], []  # per action token: where its prediction is in the flattened batch, it, its view
    for b, (prefix, members) in enumerate(rows):
        row = list(views[members[0]][0][:prefix])
        segment[b, :prefix] = 0
        positions[b, :prefix] = torch.arange(prefix)
        for k, m in enumerate(members, start=1 if prefix else 0):
            ids, mask = views[m]
            start = len(row)  # the row's column of the view's position ``prefix``
            row += ids[prefix:]
            segment[b, start:len(row)] = k
            positions[b, start:len(row)] = torch.arange(prefix, len(ids))
            at = torch.tensor(mask, dtype=torch.bool)[1:].nonzero().view(-1)  # position t - 1 predicts action token t
            flat.append(b * length + torch.where(at < prefix, at, at - prefix + start))
            targets.append(torch.tensor(ids, dtype=torch.long)[at + 1])
            view_of.append(torch.full((len(at),), m, dtype=torch.long))
        input_ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
    flat, targets, view_of = (torch.cat(x).to(device) for x in (flat, targets, view_of))
    input_ids = input_ids.to(device)
    decoder, head = _decoder_and_head(model)
    kwargs = {}
    if any(prefix for prefix, _ in rows):
        # each token sees the earlier ones of its own segment and of the prefix (pads see the prefix and
        # pads, so that no row is all masked); a lone view's tokens all have segment 0: plain causal
        segment = segment.to(device)
        cols = torch.arange(length, device=device)
        allowed = (cols[None, :] <= cols[:, None])[None] & (
            (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None]))
        config = decoder.config
        if getattr(config, "_attn_implementation", "sdpa") == "eager":  # eager adds the mask to the scores
            dtype = decoder.embed_tokens.weight.dtype
            allowed = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
        kwargs = {"attention_mask": allowed[:, None], "position_ids": positions.to(device)}
    # Otherwise padding is on the right and attention causal, so no real token sees a pad: without a mask
    # the model runs its plain causal kernel. Pads' outputs go unused.
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=input_ids, **kwargs).last_hidden_state
        logits = head(hidden.reshape(-1, hidden.shape[-1])[flat])
    else:  # unusual architectures (never packed): full logits, then select
        logits = model(input_ids=input_ids).logits
        logits = logits.reshape(-1, logits.shape[-1])[flat]
    return logits, targets, view_of


def action_logits(model, views: list[View], pad_id: int = 0) -> ActionLogits:
    """Run ``model`` on ``views`` and return logits where the action mask is 1.

    Position t-1 predicts token t, so the logits for action token t come from position t-1
    (an action token at position 0 has no prediction and is ignored). Views that share a prompt run
    it once, packed in one row behind it (:func:`shared_prefix_rows`), on models that take such a
    row's mask; rows run in batches of similar length (:func:`length_groups`): padding a short row to
    the longest one would cost as much arithmetic as a real token, forward and backward.

    Example:
        >>> from transformers import Qwen2Config, Qwen2ForCausalLM
        >>> _ = torch.manual_seed(0)
        >>> m = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
        >>> out = action_logits(m, [([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], [0, 1, 0])])
        >>> out.logits.shape, out.targets.tolist(), out.counts.tolist()
        (torch.Size([3, 32]), [3, 4, 6], [2, 1])
    """
    device = next(model.parameters()).device
    if not views:
        raise ValueError("action_logits needs at least one view")
    for i, (ids, mask) in enumerate(views):
        if len(ids) != len(mask):
            raise ValueError(f"view {i}: {len(ids)} ids but {len(mask)} mask entries")
    if _packable(model):
        rows = shared_prefix_rows([ids for ids, _ in views])
    else:
        rows = [(0, [i]) for i in range(len(views))]
    groups = length_groups([_row_length(views, row) for row in rows])
    parts = [_run_group(model, views, [rows[r] for r in group], pad_id, device) for group in groups]
    logits, targets, seq = (torch.cat(x) for x in zip(*parts))
    order = torch.argsort(seq, stable=True)  # back to the views' order, positions in order within each
    logits, targets, seq = logits[order], targets[order], seq[order]
    counts = torch.bincount(seq, minlength=len(views))
    return ActionLogits(logits=logits, targets=targets, seq=seq, counts=counts)


def sequence_logprobs(model, views: list[View], pad_id: int = 0, temperature: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum of action-token log-probs per view ``[B]``, and the per-token log-probs per view."""
    out = action_logits(model, views, pad_id)
    tok = out.token_logprobs(temperature)
    return out.per_sequence(tok), out.split(tok)
