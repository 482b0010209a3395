"""What the benchmark sections share: sizes, the model and tokenizer, the ToolCall pairs, timing and tables."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

PAIR_ENV = "pbsd/ToolCall-v0"
LR = 1e-5
BETA = 0.1
GRAD_CLIP = 1.0


@dataclass
class Sizes:
    hidden: int
    layers: int
    pairs: int  # pairs per batch (sections 1 and 2)
    warmup: int
    steps: int
    mem_steps: int
    env_seconds: float
    env_max_episodes: int
    rollout_tasks: int
    max_new_tokens: int
    rollout_reps: int
    lora_r: int


FULL = Sizes(hidden=256, layers=4, pairs=4, warmup=1, steps=5, mem_steps=3, env_seconds=3.0, env_max_episodes=2000,
             rollout_tasks=4, max_new_tokens=32, rollout_reps=5, lora_r=16)
QUICK = Sizes(hidden=32, layers=1, pairs=1, warmup=1, steps=1, mem_steps=1, env_seconds=0.2, env_max_episodes=10,
              rollout_tasks=2, max_new_tokens=4, rollout_reps=1, lora_r=4)


def setup_torch(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise SystemExit(f"tokenizer folder {path!r} not found (pass --tokenizer or --data-dir)")
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = "<|im_end|>"  # Qwen2.5-Instruct's end-of-turn token, as in the Instruct model's config
    tok.pad_token = "<|endoftext|>"
    return tok


def build_model(tok, sizes: Sizes, seed: int, eot_mean_length: float | None = None, device: str = "cpu"):
    from pbsd_agents.loading import build_tiny_model

    model = build_tiny_model(tok, hidden_size=sizes.hidden, num_layers=sizes.layers, seed=seed,
                             eot_mean_length=eot_mean_length, eot_token="<|im_end|>" if eot_mean_length else None)
    return model.to(device)


def sync(device) -> None:
    """Wait for queued GPU work, so wall-clock timers measure it."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def now() -> float:
    return time.perf_counter()


@dataclass
class PairText:
    """One single-turn preference pair from a ToolCall task: prompts as messages, turns as text."""

    student_messages: list
    teacher_messages: list
    tools: list
    chosen: str
    rejected: str


def make_pair_texts(n: int, seed: int) -> list[PairText]:
    """Pairs from ``pbsd/ToolCall-v0``: chosen = the oracle's turn, rejected = the oracle turn of another task."""
    from pbsd_agents.envs.registry import make_env
    from pbsd_agents.episode import Episode

    env = make_env(PAIR_ENV)
    out, others = [], []
    for i in range(2 * n):
        conv = Episode(env, options={"index": seed * 1000 + i}).conversation
        action = env.unwrapped.oracle_actions()[0]
        if i < n:
            out.append(PairText(conv.student_messages, conv.teacher_messages, conv.tools, action, ""))
        else:
            others.append(action)
    for p, other in zip(out, others):
        p.rejected = other
    env.close()
    return out


def kit_trajectories(prompt_ids, teacher_prompt_ids, chosen_ids, rejected_ids):
    """The kit's form of pairs: [pos0, neg0, pos1, neg1, ...] single-action trajectories."""
    from pbsd_agents.trajectory import Segment, Trajectory

    trajs = []
    for sp, tp, c, r in zip(prompt_ids, teacher_prompt_ids, chosen_ids, rejected_ids):
        for source, ids in (("teacher", c), ("student", r)):
            trajs.append(Trajectory(env_id=PAIR_ENV, task_id="bench", source=source, privileged="",
                                    student_prompt_ids=list(sp), teacher_prompt_ids=list(tp),
                                    segments=[Segment("action", list(ids), [0.0] * len(ids))]))
    return trajs


def batch_of(trajs):
    from pbsd_agents.algorithms import Batch, TaskGroup

    return Batch(groups=[TaskGroup(index=i, teacher=[trajs[2 * i]], student=[trajs[2 * i + 1]])
                         for i in range(len(trajs) // 2)])


def apply(loss, params, opt) -> None:
    """The end of every timed update: backward, grad-norm clip to ``GRAD_CLIP``, AdamW step."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    opt.step()


def pbsd_algorithm(pad_id: int):
    """The PBSD loss every section times (the benchmark's beta, no gap-token logging)."""
    from pbsd_agents.algorithms import PBSD, PBSDConfig

    return PBSD(PBSDConfig(beta=BETA, log_gap_every=0), pad_id=pad_id)


def full_logits_seq_logprobs(model, views, pad_id):
    """A plain loop's scoring: full-vocabulary logits at every position, then the action positions.

    Sums of log p(action token) per view ``[B]``. Used for the 'bare' rows (not by the kit).
    """
    import torch

    length = max(len(ids) for ids, _ in views)
    ids = torch.full((len(views), length), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, (v, m) in enumerate(views):
        ids[i, : len(v)] = torch.tensor(v)
        attn[i, : len(v)] = 1
        mask[i, : len(v)] = torch.tensor(m, dtype=torch.bool)
    mask[:, 0] = False
    device = next(model.parameters()).device
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits  # [B, L, V]
    target_mask = mask[:, 1:]
    sel = logits[:, :-1][target_mask]
    lp = torch.log_softmax(sel.float(), dim=-1).gather(1, ids[:, 1:][target_mask][:, None]).squeeze(1)
    seq = torch.arange(len(views), device=device)[:, None].expand_as(target_mask)[target_mask]
    return torch.zeros(len(views), dtype=lp.dtype, device=device).index_add(0, seq, lp)
