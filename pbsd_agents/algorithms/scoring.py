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


def _run_group(model, views: list[View], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits [N, V], targets [N], row [N])`` at the action positions of one right-padded batch."""
    length = max(len(ids) for ids, _ in views)
    input_ids = torch.full((len(views), length), pad_id, dtype=torch.long)
    target_mask = torch.zeros((len(views), length), dtype=torch.bool)
    for i, (ids, mask) in enumerate(views):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        target_mask[i, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
    target_mask[:, 0] = False
    input_ids, target_mask = input_ids.to(device), target_mask.to(device)
    # Positions whose *next* token is an action token.
    pred_mask = torch.zeros_like(target_mask)
    pred_mask[:, :-1] = target_mask[:, 1:]
    decoder, head = _decoder_and_head(model)
    # Padding is on the right and attention causal, so no real token sees a pad: without a mask the
    # model runs its plain causal kernel (no mask to build, no masked attention). Pads' outputs go unused.
    if decoder is not None and head is not None:
        hidden = decoder(input_ids=input_ids).last_hidden_state
        logits = head(hidden[pred_mask])
    else:  # unusual architectures: full logits, then select
        logits = model(input_ids=input_ids).logits[pred_mask]
    row = torch.arange(len(views), device=device)[:, None].expand_as(pred_mask)[pred_mask]
    return logits, input_ids[target_mask], row


def action_logits(model, views: list[View], pad_id: int = 0) -> ActionLogits:
    """Run ``model`` on ``views`` and return logits where the action mask is 1.

    Position t-1 predicts token t, so the logits for action token t come from position t-1
    (an action token at position 0 has no prediction and is ignored). Views run in batches of
    similar length (:func:`length_groups`): padding a short view to the longest one would cost
    as much arithmetic as a real token, forward and backward.

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
    parts = []
    for group in length_groups([len(ids) for ids, _ in views]):
        logits, targets, row = _run_group(model, [views[i] for i in group], pad_id, device)
        parts.append((logits, targets, torch.tensor(group, device=device)[row]))
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
