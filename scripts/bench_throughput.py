#!/usr/bin/env python
"""Throughput and memory benchmarks of the kit; writes docs/BENCHMARKS.md (issue 7, item 2).

    python scripts/bench_throughput.py                    # full run (a few minutes on 2 CPU cores)
    python scripts/bench_throughput.py --quick            # small sizes (what the slow test runs)
    python scripts/bench_throughput.py --sections 1,3     # only some sections

Sections of the report:

1. **PBSD update vs TRL's DPOTrainer**: one optimizer step (forward + loss + backward + clip + AdamW
   step) of each on the same model, the same single-turn pairs (token for token: the kit trains on
   the ids TRL's own tokenization produced) and the same batch, with the reference (teacher)
   log-probs computed once beforehand for both. Median of ``--steps`` steps after ``--warmup``.
   Extra rows, to attribute the difference: the kit's full ``PBSD.loss`` (teacher forward every step)
   and a plain-PyTorch DPO step that computes full-vocabulary logits at every position.
2. **Peak memory, LoRA vs full fine-tuning**: a few PBSD updates in a fresh subprocess per
   configuration (full fine-tuning keeps a frozen teacher copy); peak RSS from ``VmHWM``.
3. **Environment steps/s with the oracle policy**, per registered environment (loaders read
   ``--data-dir``; those whose data is missing are skipped with a note).
4. **Framework overhead**: one PBSD iteration of the kit (``Collector.collect`` of student and
   teacher samples on ``pbsd/ToolCall-v0`` + ``PBSD.loss`` update) vs a bare transformers loop
   (``model.generate`` on the same prompt ids, forced to the same number of decoding steps, with
   the same sampling settings; then one forward/backward of the same sequences).

The model is a small Qwen2 built from a config with the real Qwen2.5 tokenizer (151,665 ids), so the
LM head dominates as it does with real models. Machine information and the exact command go at the
top of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
PAIR_ENV = "pbsd/ToolCall-v0"


# ---- settings ----------------------------------------------------------------------------------


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

LR = 1e-5
BETA = 0.1
GRAD_CLIP = 1.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: 1 = PBSD vs TRL DPOTrainer step time; 2 = peak memory LoRA vs full fine-tuning; "
               "3 = environment steps/s with the oracle; 4 = kit rollout+update vs a bare transformers loop.",
    )
    p.add_argument("--quick", action="store_true", help="small model and few steps (a smoke test, ~1-2 min)")
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="markdown report to write (default: docs/BENCHMARKS.md)")
    p.add_argument("--sections", default="1,2,3,4", help="comma-separated sections to run (default: all)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="shared data folder (tokenizer, BFCL, GSM8K, tau-bench)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: DATA_DIR/tokenizers/qwen2.5-instruct)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device for sections 1, 2 and 4 (default: cpu; e.g. cuda)")
    p.add_argument("--append", action="append", default=[], metavar="REPORT",
                   help="append another report of this script (e.g. a GPU run) as an appendix; repeatable")
    for name in ("hidden", "layers", "pairs", "warmup", "steps", "rollout_tasks", "max_new_tokens", "rollout_reps", "lora_r"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"override the preset's {name}")
    p.add_argument("--env-seconds", type=float, default=None, help="time budget per environment in section 3")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in Sizes.__dataclass_fields__ if getattr(args, k, None) is not None}
    args.sizes = Sizes(**{**sizes.__dict__, **overrides})
    args.sections = sorted({int(s) for s in str(args.sections).split(",") if s.strip()})
    bad = [s for s in args.sections if s not in (1, 2, 3, 4)]
    if bad:
        p.error(f"unknown section(s) {bad}; valid: 1, 2, 3, 4")
    args.tokenizer = args.tokenizer or str(Path(args.data_dir) / "tokenizers" / "qwen2.5-instruct")
    return args


# ---- shared helpers ----------------------------------------------------------------------------


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
    tok.eos_token = "<|im_end|>"  # the chat end-of-turn token (shared/data/README.md)
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
    import gymnasium

    import pbsd_agents  # noqa: F401  (registers the envs)

    env = gymnasium.make(PAIR_ENV)
    out, others = [], []
    for i in range(2 * n):
        obs, info = env.reset(options={"index": seed * 1000 + i})
        action = env.unwrapped.oracle_actions()[0]
        if i < n:
            teacher = env.unwrapped.teacher_messages(obs, info["privileged"])
            out.append(PairText(obs, teacher, info["tools"], action, ""))
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


# ---- section 1: PBSD vs TRL DPOTrainer ---------------------------------------------------------


def section_trl(args, tok) -> dict:
    import torch

    from pbsd_agents.algorithms import PBSD, PBSDConfig
    from pbsd_agents.algorithms.pbsd import pbsd_loss
    from pbsd_agents.algorithms.scoring import sequence_logprobs
    from pbsd_agents.models import Policy

    s = args.sizes
    dev = args.device
    B, total_steps = s.pairs, s.warmup + s.steps
    texts = make_pair_texts(B, args.seed)
    result: dict = {"pairs": B, "warmup": s.warmup, "steps": s.steps}
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:
        trl = None
        result["trl_error"] = f"trl not importable ({exc}); `pip install -e '.[bench]'` (trl~=1.16.0)"

    tmp = tempfile.TemporaryDirectory(prefix="bench-trl-")
    trainer = None
    if trl is not None:
        result["trl_version"] = trl.__version__
        rows = [{"prompt": tok.apply_chat_template(p.student_messages, tools=p.tools, add_generation_prompt=True, tokenize=False),
                 "chosen": p.chosen + tok.eos_token, "rejected": p.rejected + tok.eos_token} for p in texts]
        # The same B pairs in the same order at every step: identical batches, identical padding.
        dataset = Dataset.from_list(rows * total_steps)

        class Interleave(TrainerCallback):
            """Times each TRL step (on_step_begin -> on_step_end), then runs one step of each kit variant,
            so TRL and the kit alternate under the same machine load."""

            def __init__(self):
                self.kit_steps = None  # set once the kit is built
                self.trl, self.loop = [], []
                self.t_begin = self.t_resume = None

            def on_step_begin(self, a, state, control, **kw):
                sync(dev)
                self.t_begin = now()

            def on_step_end(self, a, state, control, **kw):
                sync(dev)
                t = now()
                self.trl.append(t - self.t_begin)
                if self.t_resume is not None:
                    self.loop.append(t - self.t_resume)  # whole TRL loop since the previous step, kit time excluded
                self.kit_steps()
                self.t_resume = now()

        timer = Interleave()
        config = DPOConfig(
            output_dir=tmp.name, per_device_train_batch_size=B, max_steps=total_steps, learning_rate=LR,
            weight_decay=0.0, optim="adamw_torch", lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=GRAD_CLIP, beta=BETA, loss_type=["sigmoid"], precompute_ref_log_probs=True,
            precompute_ref_batch_size=B, max_length=None, train_sampling_strategy="sequential",
            logging_strategy="no", save_strategy="no", report_to="none", use_cpu=(dev == "cpu"),
            dataloader_num_workers=0, disable_tqdm=True, seed=args.seed, bf16=False, fp16=False,
        )
        t0 = now()
        trainer = DPOTrainer(model=build_model(tok, s, args.seed, device=dev), args=config, train_dataset=dataset,
                             processing_class=tok, callbacks=[timer])
        result["trl_init_s"] = now() - t0  # tokenization + reference precompute over the dataset
        ds = trainer.train_dataset
        prompt_ids = [list(x) for x in ds["prompt_ids"][:B]]
        chosen_ids = [list(x) for x in ds["chosen_ids"][:B]]
        rejected_ids = [list(x) for x in ds["rejected_ids"][:B]]
        trl_ref = torch.tensor([[c, r] for c, r in zip(ds["ref_chosen_logps"][:B], ds["ref_rejected_logps"][:B])], device=dev)
    else:
        def enc(text):
            return tok(text, add_special_tokens=False)["input_ids"]

        prompt_ids = [enc(tok.apply_chat_template(p.student_messages, tools=p.tools, add_generation_prompt=True, tokenize=False))
                      for p in texts]
        chosen_ids = [enc(p.chosen + tok.eos_token) for p in texts]
        rejected_ids = [enc(p.rejected + tok.eos_token) for p in texts]
        trl_ref = None

    # The kit, on exactly those ids. DPO's reference sees the same prompt, so the teacher prompt = the prompt here.
    trajs = kit_trajectories(prompt_ids, prompt_ids, chosen_ids, rejected_ids)
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, chosen_ids)] + [len(p) + len(r) for p, r in zip(prompt_ids, rejected_ids)]
    action_tokens = sum(t.num_action_tokens for t in trajs)
    result.update(
        prompt_tokens_mean=statistics.mean(len(p) for p in prompt_ids),
        completion_tokens_mean=action_tokens / len(trajs),
        sequences=len(trajs), padded_len=max(lengths), action_tokens=action_tokens,
        head_positions_all=len(trajs) * (max(lengths) - 1),  # every position of the padded batch
        head_positions_kit=action_tokens,  # the kit: the positions predicting action tokens only
        device=dev,
    )
    # TRL's fused head scores only the completion positions where it runs its Triton kernel (CUDA/XPU), else every position.
    compact = str(dev).startswith(("cuda", "xpu"))
    if trl is not None:
        try:
            from trl.kernels.chunked_logprob import _use_triton

            compact = _use_triton(torch.device(dev))
        except Exception:  # a TRL without this helper: keep the device-type guess
            pass
    result["trl_compact"] = compact
    result["head_positions_trl"] = action_tokens if compact else result["head_positions_all"]
    model = build_model(tok, s, args.seed, device=dev)
    model.train()
    policy = Policy(model, tok)  # full fine-tuning: frozen teacher copy at θ0
    pad = tok.pad_token_id
    with torch.no_grad(), policy.teacher() as teacher:
        t0 = now()
        cached, _ = sequence_logprobs(teacher, [t.teacher_view() for t in trajs], pad)
        sync(dev)
        result["kit_teacher_precompute_s"] = now() - t0
    if trl_ref is not None:
        result["ref_max_abs_diff"] = float((cached.view(-1, 2) - trl_ref).abs().max())

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    views = [t.student_view() for t in trajs]
    algo = PBSD(PBSDConfig(beta=BETA, log_gap_every=0), pad_id=pad)
    batch = batch_of(trajs)

    def finish(loss):
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        return loss.item()

    def kit_cached_step():  # the PBSD update with h from cached teacher log-probs
        opt.zero_grad(set_to_none=True)
        lp, _ = sequence_logprobs(model, views, pad)
        h = lp - cached
        return finish(pbsd_loss(h[0::2], h[1::2], BETA).mean())

    def kit_full_step():  # PBSD.loss as the trainer calls it: teacher forward every step
        opt.zero_grad(set_to_none=True)
        return finish(algo.loss(batch, policy)[0])

    def plain_step():  # same loss, full-vocabulary logits at every position
        opt.zero_grad(set_to_none=True)
        lp = full_logits_seq_logprobs(model, views, pad)
        h = lp - cached
        return finish(pbsd_loss(h[0::2], h[1::2], BETA).mean())

    variants = {"kit": kit_cached_step, "kit_full": kit_full_step, "plain": plain_step}
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, list[float]] = {k: [] for k in variants}

    def kit_steps():
        for name, fn in variants.items():
            sync(dev)
            t0 = now()
            losses[name].append(fn())  # .item() waits for the step's GPU work
            times[name].append(now() - t0)

    if trainer is not None:
        timer.kit_steps = kit_steps
        trainer.train()
        result["trl_step_s"] = median(timer.trl[s.warmup:])
        result["trl_step_min_s"] = min(timer.trl[s.warmup:])
        result["trl_loop_s"] = median(timer.loop[max(0, s.warmup - 1):]) if timer.loop[max(0, s.warmup - 1):] else float("nan")
        del trainer
    else:
        for _ in range(total_steps):
            kit_steps()
    tmp.cleanup()
    for name in variants:
        result[f"{name}_step_s"] = median(times[name][s.warmup:])
        result[f"{name}_step_min_s"] = min(times[name][s.warmup:])
    result["kit_first_loss"] = losses["kit"][0]
    if "trl_step_s" in result:
        result["ratio_trl_over_kit"] = result["trl_step_s"] / result["kit_step_s"]
    return result


def report_trl(r: dict, sizes: Sizes) -> str:
    out = ["## 1. PBSD update vs TRL `DPOTrainer`", ""]
    out.append(
        f"Same model, same {r['pairs']} single-turn pairs from `{PAIR_ENV}` (chosen: the oracle's turn; rejected: another "
        f"task's oracle turn), token for token: the kit trains on the ids TRL's tokenization produced. Prompt "
        f"{fmt(r['prompt_tokens_mean'], 0)} tokens, completions {fmt(r['completion_tokens_mean'], 1)} tokens on average, "
        f"{r['sequences']} sequences padded to {r['padded_len']}. Reference (teacher) log-probs computed once beforehand for "
        f"both (TRL: `precompute_ref_log_probs=True`; kit: one teacher `sequence_logprobs` pass, then h from the cached "
        f"numbers). One step = zero_grad + forward + loss + backward + grad-norm clip ({GRAD_CLIP}) + AdamW step "
        f"(lr {LR}, no weight decay, `adamw_torch` in TRL), timed from TRL's `on_step_begin` to `on_step_end`. "
        "TRL and the kit alternate step by step (a TRL callback runs one step of each kit variant after each TRL step), "
        f"so both see the same machine load. Median of {r['steps']} steps after {r['warmup']} warm-up step(s)."
    )
    out.append("")
    rows = []
    if "trl_step_s" in r:
        rows.append([f"TRL {r.get('trl_version', '')} `DPOTrainer` (precomputed reference)", r["trl_step_s"], r["trl_step_min_s"],
                     r["head_positions_trl"], r["trl_step_s"] / r["kit_step_s"]])
        rows.append(["TRL, whole loop per step (data collation + logging included)", r["trl_loop_s"], None, r["head_positions_trl"],
                     r["trl_loop_s"] / r["kit_step_s"]])
    rows.append(["kit: PBSD step on cached teacher log-probs", r["kit_step_s"], r["kit_step_min_s"], r["head_positions_kit"], 1.0])
    rows.append(["kit: `PBSD.loss` as the trainer runs it (teacher forward every step)", r["kit_full_step_s"],
                 r["kit_full_step_min_s"], r["head_positions_kit"] * 2, r["kit_full_step_s"] / r["kit_step_s"]])
    rows.append(["plain PyTorch: same loss, full-vocabulary logits at every position", r["plain_step_s"], r["plain_step_min_s"],
                 r["head_positions_all"], r["plain_step_s"] / r["kit_step_s"]])
    out.append(table(["update", "median s/step", "min s/step", "LM-head positions", "× kit"], rows))
    out.append("")
    if "trl_error" in r:
        out.append(f"TRL rows missing: {r['trl_error']}.")
        out.append("")
    else:
        out.append(f"**TRL / kit step time: {r['ratio_trl_over_kit']:.2f}×.** TRL's init (tokenization + reference "
                   f"precompute over the whole dataset) took {r['trl_init_s']:.1f} s; the kit's teacher pass over one batch "
                   f"{r['kit_teacher_precompute_s']:.2f} s. Largest |difference| between TRL's precomputed reference "
                   f"log-probs and the kit's teacher log-probs: {r['ref_max_abs_diff']:.2e} nats (same quantity, same weights). "
                   f"First-step loss (kit): {r['kit_first_loss']:.4f} (log 2 = 0.6931 when student = teacher).")
        out.append("")
    out.append("What differs (read from TRL's source and measured by the rows above):")
    out.append("")
    out.append(
        "- **LM-head positions.** TRL patches the model with a fused, chunked log-prob head (`add_fused_lm_head`) that "
        "never materialises the `[batch, length, vocab]` logits and recomputes its tiles in the backward pass. With "
        "Triton on a CUDA/XPU device it scores only the completion positions; elsewhere (CPU) it scores *every* position "
        "of the padded batch, prompt and padding included, folding `[4096 tokens × 32768 vocab]` tiles with torch ops, "
        f"and masks afterwards ({'completion positions only' if r['trl_compact'] else 'every position'} on this run's "
        f"`{r['device']}`: {r['head_positions_trl']} positions). The kit runs the LM head only on the positions that "
        f"predict action tokens ({r['head_positions_kit']} here) and materialises those `[action tokens, vocab]` logits "
        "in full. With a 151k vocabulary and prompts much longer than completions, the head dominates on a CPU; the "
        "plain-PyTorch row (every position, materialised logits) shows what scoring every position costs without "
        "chunking.")
    out.append(
        "- **One forward for chosen and rejected.** Both concatenate the pair into one batch (TRL: all chosen then all "
        "rejected; kit: pos0, neg0, pos1, ...), so both run one forward and one backward per step.")
    out.append(
        "- **Reference.** TRL with `precompute_ref_log_probs=True` scores the reference over the whole dataset at init "
        "and drops the reference model; the kit's trainer scores the teacher every step (the `PBSD.loss` row), because "
        "on-policy samples are new at every step and the teacher prompt differs from the student prompt (privileged context), "
        "which DPO's reference never sees.")
    out.append(
        "- **Trainer machinery.** TRL runs through `transformers.Trainer` + `accelerate` (dataloader, collator that pads "
        "and flushes left, metrics such as rewards/margins/accuracies gathered every step, LR scheduler); the 'whole loop' "
        "row includes that. The kit's step is a plain PyTorch loop over trajectories already in memory.")
    out.append("")
    return "\n".join(out)


# ---- section 2: memory, LoRA vs full ------------------------------------------------------------


def peak_rss_kb() -> int:
    """Peak RSS of this process's address space in KiB: ``VmHWM`` from /proc (reset by exec, unlike
    ``ru_maxrss``, which a child started by fork+exec inherits from its parent), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(args, mode: str) -> dict:
    """Run in a fresh process: build the policy (LoRA or full), do a few PBSD updates, report RSS."""
    import psutil
    import torch

    from pbsd_agents.algorithms import PBSD, PBSDConfig
    from pbsd_agents.chat import ChatRenderer
    from pbsd_agents.models import Policy

    setup_torch(args)
    proc = psutil.Process()
    s = args.sizes
    tok = load_tokenizer(args.tokenizer)
    renderer = ChatRenderer(tok)
    texts = make_pair_texts(s.pairs, args.seed)
    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    trajs = kit_trajectories(
        [renderer.prompt_ids(p.student_messages, p.tools) for p in texts],
        [renderer.prompt_ids(p.teacher_messages, p.tools) for p in texts],
        [enc(p.chosen + tok.eos_token) for p in texts], [enc(p.rejected + tok.eos_token) for p in texts])
    batch = batch_of(trajs)
    rss_imports = proc.memory_info().rss
    model = build_model(tok, s, args.seed, device=args.device)
    model.train()
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=s.lora_r, lora_alpha=2 * s.lora_r, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    policy = Policy(model, tok)  # full: deep-copies a frozen teacher; LoRA: the teacher is the base with adapters off
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    algo = PBSD(PBSDConfig(beta=BETA, log_gap_every=0), pad_id=tok.pad_token_id)
    rss_setup = proc.memory_info().rss
    times = []
    for _ in range(s.mem_steps):
        t0 = now()
        opt.zero_grad(set_to_none=True)
        loss, _ = algo.loss(batch, policy)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        times.append(now() - t0)
    peak_kb = peak_rss_kb()
    mb = 1024 * 1024
    n_params = sum(p.numel() for p in model.parameters())
    if policy._teacher_copy is not None:
        n_params += sum(p.numel() for p in policy._teacher_copy.parameters())
    return {
        "mode": mode,
        "params_in_memory": n_params,
        "trainable": sum(p.numel() for p in params),
        "rss_imports_mb": rss_imports / mb,
        "rss_setup_mb": rss_setup / mb,
        "peak_mb": peak_kb * 1024 / mb,
        "step_s": median(times),
        "sequences": len(trajs),
        "action_tokens": sum(t.num_action_tokens for t in trajs),
        "gpu_peak_mb": (torch.cuda.max_memory_allocated() / mb) if args.device.startswith("cuda") else None,
    }


def section_memory(args) -> dict:
    results = {}
    for mode in ("lora", "full"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", mode, "--tokenizer", args.tokenizer,
               "--data-dir", args.data_dir, "--seed", str(args.seed), "--hidden", str(args.sizes.hidden),
               "--layers", str(args.sizes.layers), "--pairs", str(args.sizes.pairs), "--lora-r", str(args.sizes.lora_r),
               "--device", args.device]
        if args.quick:
            cmd.append("--quick")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory child ({mode}) failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(lines[-1])
    return results


def report_memory(r: dict, sizes: Sizes) -> str:
    lo, fu = r["lora"], r["full"]
    out = ["## 2. Peak memory: LoRA vs full fine-tuning (PBSD update)", ""]
    out.append(
        f"Each configuration runs in a fresh subprocess: load tokenizer and build {lo['sequences']} sequences "
        f"({lo['sequences'] // 2} pairs of `{PAIR_ENV}` with student and teacher prompts, {lo['action_tokens']} action "
        f"tokens), build the model, wrap it (LoRA r={sizes.lora_r} on all linear layers, or full fine-tuning with the "
        f"frozen teacher copy `Policy` keeps), AdamW, then {sizes.mem_steps} `PBSD.loss` update(s) (teacher forward + "
        "student forward + backward + clip + step). Peak = `VmHWM` (peak resident set) of the subprocess (whole process: Python, torch, "
        "tokenizer included); 'after imports' is the RSS before the model is built.")
    out.append("")
    rows = []
    gpu = lo.get("gpu_peak_mb") is not None
    for x, name in ((lo, f"LoRA r={sizes.lora_r}"), (fu, "full fine-tuning (+ frozen teacher copy)")):
        rows.append([name, f"{x['params_in_memory'] / 1e6:.1f} M", f"{x['trainable'] / 1e6:.2f} M", f"{x['rss_imports_mb']:.0f}",
                     f"{x['rss_setup_mb']:.0f}", f"{x['peak_mb']:.0f}", f"{x['peak_mb'] - x['rss_imports_mb']:.0f}"]
                    + ([f"{x['gpu_peak_mb']:.0f}"] if gpu else []) + [x["step_s"]])
    out.append(table(["config", "weights in memory", "trainable", "RSS after imports (MB)", "RSS after setup (MB)",
                      "peak RSS (MB)", "peak − imports (MB)"] + (["GPU peak allocated (MB)"] if gpu else []) + ["median s/update"], rows))
    out.append("")
    if gpu:
        out.append(f"**GPU memory, full / LoRA: {fu['gpu_peak_mb'] / lo['gpu_peak_mb']:.2f}×** "
                   "(`torch.cuda.max_memory_allocated`; the weights live on the GPU, so host RSS says little here).")
        out.append("")
    d_lo, d_fu = lo["peak_mb"] - lo["rss_imports_mb"], fu["peak_mb"] - fu["rss_imports_mb"]
    out.append(f"**Full / LoRA: {fu['peak_mb'] / lo['peak_mb']:.2f}× peak RSS, {d_fu / d_lo:.2f}× above the import baseline.** "
               "Full fine-tuning holds two copies of the weights (student + frozen teacher), their gradients and two AdamW "
               "moments; LoRA holds one copy and the adapters' gradients and moments. With this model's 151k-token tied "
               "embedding most weights sit in the embedding, which LoRA does not train. Peak − setup, what the updates "
               "add (activations, the `[action tokens × vocab]` logits and their log-softmax for both views, gradients, "
               f"and the AdamW state created at the first step): LoRA {lo['peak_mb'] - lo['rss_setup_mb']:.0f} MB, "
               f"full {fu['peak_mb'] - fu['rss_setup_mb']:.0f} MB.")
    out.append("")
    return "\n".join(out)


# ---- section 3: environment steps/s -------------------------------------------------------------


def env_specs(data_dir: Path) -> list[tuple[str, dict, Path | None]]:
    return [
        ("pbsd/ToolCall-v0", {}, None),
        ("pbsd/MathCalc-v0", {}, None),
        ("pbsd/Retail-v0", {}, None),
        ("pbsd/BFCL-v0", {"data_path": str(data_dir / "bfcl" / "BFCL_v3_simple.json")}, data_dir / "bfcl" / "BFCL_v3_simple.json"),
        ("pbsd/GSM8K-v0", {"data_path": str(data_dir / "gsm8k" / "train.jsonl")}, data_dir / "gsm8k" / "train.jsonl"),
        ("pbsd/TauRetail-v0", {"data_dir": str(data_dir / "tau_bench" / "retail")}, data_dir / "tau_bench" / "retail"),
    ]


def section_envs(args) -> dict:
    import gymnasium

    import pbsd_agents  # noqa: F401

    s = args.sizes
    rows = []
    for env_id, kwargs, needs in env_specs(Path(args.data_dir)):
        if needs is not None and not needs.exists():
            rows.append({"env": env_id, "skipped": f"no data at {needs}"})
            continue
        t0 = now()
        env = gymnasium.make(env_id, **kwargs)
        make_s = now() - t0
        n = env.unwrapped.num_tasks
        steps = episodes = successes = 0
        reset_s = 0.0
        t_start = now()
        while episodes < s.env_max_episodes and now() - t_start < s.env_seconds:
            index = episodes % n if n else episodes
            t0 = now()
            env.reset(seed=args.seed, options={"index": index})
            reset_s += now() - t0
            info = {}
            for action in env.unwrapped.oracle_actions():
                _, _, terminated, truncated, info = env.step(action)
                steps += 1
                if terminated or truncated:
                    break
            episodes += 1
            successes += bool(info.get("success"))
        wall = now() - t_start
        env.close()
        rows.append({"env": env_id, "kwargs": kwargs, "make_s": make_s, "num_tasks": n, "episodes": episodes, "steps": steps,
                     "wall_s": wall, "steps_per_s": steps / wall, "episodes_per_s": episodes / wall,
                     "steps_per_episode": steps / max(episodes, 1), "reset_ms": 1000 * reset_s / max(episodes, 1),
                     "oracle_success": successes / max(episodes, 1),
                     "data_errors": len(getattr(env.unwrapped, "data_errors", {}) or {})})
    return {"rows": rows, "bench_envs_script": (ROOT / "scripts" / "bench_envs.py").exists()}


def report_envs(r: dict, sizes: Sizes) -> str:
    out = ["## 3. Environment steps/s with the oracle policy", ""]
    out.append(
        f"`gymnasium.make(id, **kwargs)` (with gymnasium's default wrappers), then episodes over task indices 0, 1, 2, ... "
        f"for up to {sizes.env_seconds:g} s (at most {sizes.env_max_episodes} episodes) per environment: `reset`, then "
        "`step` with each of `env.unwrapped.oracle_actions()` until the episode ends. Steps/s counts `step` calls over "
        "the whole loop (resets included). Single-process, no model.")
    out.append("")
    rows = []
    for x in r["rows"]:
        if "skipped" in x:
            rows.append([f"`{x['env']}`", "skipped: " + x["skipped"], None, None, None, None, None, None])
            continue
        rows.append([f"`{x['env']}`", x["num_tasks"] if x["num_tasks"] is not None else "∞", round(x["make_s"], 3),
                     round(x["steps_per_s"], 1), round(x["episodes_per_s"], 1), round(x["steps_per_episode"], 2),
                     round(x["reset_ms"], 3), round(x["oracle_success"], 3)])
    out.append(table(["env", "tasks", "make (s)", "steps/s", "episodes/s", "steps/episode", "reset (ms)", "oracle success"], rows))
    out.append("")
    flagged = [x for x in r["rows"] if x.get("data_errors") and x.get("oracle_success", 1.0) < 1.0]
    for x in flagged:
        out.append(f"`{x['env']}`: the loader flags {x['data_errors']} task(s) of this split as data errors (a gold "
                   "answer that cannot be met, e.g. a gold function missing from the task's functions); they always "
                   "score 0, so the oracle's success is below 1 when they are among the episodes run.")
        out.append("")
    data = [x for x in r["rows"] if "kwargs" in x and x["kwargs"]]
    if data:
        out.append("Loader arguments: " + "; ".join(f"`{x['env']}`: " + ", ".join(f"{k}=`{Path(v).relative_to(Path(v).parents[2]) if len(Path(v).parents) > 2 else v}`"
                                                                                     for k, v in x["kwargs"].items()) for x in data) + " (under the shared data folder).")
        out.append("")
    return "\n".join(out)


# ---- section 4: kit rollout + update vs a bare transformers loop ---------------------------------


def calibrate_eot(model, prompts, eot_id: int, target: float, iters: int = 4) -> tuple[float, float]:
    """Make a random model end its turns: set the end-of-turn embedding's first coordinate (the one
    ``build_tiny_model(eot_mean_length=...)`` shifts) so that p(end of turn) at the generation prompt is
    about ``target``. Returns (p before, p after), measured on ``prompts``."""
    import math

    import torch

    device = next(model.parameters()).device
    emb = model.get_input_embeddings().weight
    first = None
    for _ in range(iters):
        with torch.no_grad():
            h = torch.stack([model.model(input_ids=torch.tensor([p], device=device)).last_hidden_state[0, -1]
                             for p in prompts])
            p = model.get_output_embeddings()(h).float().softmax(-1)[:, eot_id].mean().item()
            first = p if first is None else first
            c = h[:, 0].mean().item()  # the logit moves by c per unit of the embedding's first coordinate
            if abs(c) < 1e-6:
                break
            emb[eot_id, 0] += (math.log(target / (1 - target)) - math.log(p / (1 - p))) / c
    return first, p


def section_rollout(args, tok) -> dict:
    import torch

    from pbsd_agents.algorithms import PBSD, PBSDConfig
    from pbsd_agents.algorithms.pbsd import pbsd_loss
    from pbsd_agents.chat import ChatRenderer
    from pbsd_agents.models import Policy
    from pbsd_agents.rollout import Collector

    s = args.sizes
    n, M = s.rollout_tasks, s.max_new_tokens
    dev = args.device
    model = build_model(tok, s, args.seed, eot_mean_length=M / 2, device=dev)
    renderer = ChatRenderer(tok)
    probe = make_pair_texts(4, args.seed + 1)
    p_eot = calibrate_eot(model, [renderer.prompt_ids(p.student_messages, p.tools) for p in probe],
                          renderer.eot_id, 2.0 / M)
    policy = Policy(model, tok)
    policy.renderer = renderer
    collector = Collector.for_policy(policy, batch_size=n, progress=False)
    algo = PBSD(PBSDConfig(beta=BETA, log_gap_every=0), pad_id=tok.pad_token_id)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    pad, stops = tok.pad_token_id, list(renderer.stop_ids)

    # Where the kit's collection time goes: wrap two of the collector's calls on this instance (no library change).
    split = {"start": 0.0, "engine": 0.0}

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = now()
            try:
                return fn(*a, **k)
            finally:
                split[key] += now() - t0
        return wrapper

    collector._start = timed("start", collector._start)  # env.reset + both prompts rendered with the chat template
    collector.engine.generate = timed("engine", collector.engine.generate)  # HFEngine: transformers generate + sampler

    def kit_update(batch):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss, _ = algo.loss(batch, policy)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        sync(dev)

    def bare_generate(net, prompts, steps, seed):
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        torch.manual_seed(seed)
        net.eval()
        with torch.no_grad():
            out = net.generate(input_ids=ids.to(dev), attention_mask=attn.to(dev), do_sample=True, temperature=1.0, top_k=0,
                               top_p=1.0, max_new_tokens=steps, min_new_tokens=steps, eos_token_id=stops, pad_token_id=pad)
        sync(dev)
        return out.shape[1] - width

    def bare_update(trajs):
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad(), policy.teacher() as teacher:
            lt = full_logits_seq_logprobs(teacher, [t.teacher_view() for t in trajs], pad)
        ls = full_logits_seq_logprobs(model, [t.student_view() for t in trajs], pad)
        h = ls - lt
        loss = pbsd_loss(h[0::2], h[1::2], BETA).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        sync(dev)

    reps = []
    for rep in range(1 + s.rollout_reps):  # rep 0 is warm-up
        tasks = list(range(rep * n, rep * n + n))
        seed = args.seed * 100 + rep
        split.update(start=0.0, engine=0.0)
        # Kit and bare alternate phase by phase, so both see the same machine load. The bare loop decodes, on the
        # same prompts, as many steps as the kit's longest turn in that view.
        t0 = now()
        stud = collector.collect(PAIR_ENV, tasks, view="student", temperature=1.0, max_new_tokens=M, seed=seed)
        kit_s = now() - t0
        steps_s = max(len(t.action_ids) for t in stud)
        t0 = now()
        got_s = bare_generate(model, [t.student_prompt_ids for t in stud], steps_s, seed)
        bare_s = now() - t0
        t0 = now()
        teach = collector.collect(PAIR_ENV, tasks, view="teacher", temperature=1.0, max_new_tokens=M, seed=seed + 1)
        kit_t = now() - t0
        steps_t = max(len(t.action_ids) for t in teach)
        t0 = now()
        with policy.teacher() as teacher:
            got_t = bare_generate(teacher, [t.teacher_prompt_ids for t in teach], steps_t, seed + 1)
        bare_t = now() - t0
        if (got_s, got_t) != (steps_s, steps_t):
            raise RuntimeError(f"bare generate ran {got_s}/{got_t} steps, expected {steps_s}/{steps_t}")
        trajs = [t for pair in zip(teach, stud) for t in pair]
        t0 = now()
        kit_update(batch_of(trajs))
        kit_u = now() - t0
        t0 = now()
        bare_update(trajs)
        bare_u = now() - t0
        reps.append({
            "kit_collect_student": kit_s, "kit_collect_teacher": kit_t, "kit_update": kit_u,
            "kit_total": kit_s + kit_t + kit_u,
            "kit_start": split["start"], "kit_engine": split["engine"],
            "kit_rest": kit_s + kit_t - split["start"] - split["engine"],
            "bare_gen_student": bare_s, "bare_gen_teacher": bare_t, "bare_update": bare_u,
            "bare_total": bare_s + bare_t + bare_u,
            "decode_steps": steps_s + steps_t,
            "action_tokens": sum(t.num_action_tokens for t in trajs),
            "finished": sum(not t.truncated for t in trajs),
            "student_prompt_mean": statistics.mean(len(t.student_prompt_ids) for t in stud),
            "teacher_prompt_mean": statistics.mean(len(t.teacher_prompt_ids) for t in teach),
        })
    timed_reps = reps[1:]
    med = {k: median([r[k] for r in timed_reps]) for k in timed_reps[0]}
    med["ratio"] = med["kit_total"] / med["bare_total"]
    per_rep = [r["kit_total"] / r["bare_total"] for r in timed_reps]
    return {"tasks": n, "max_new_tokens": M, "reps": len(timed_reps), "median": med, "all": timed_reps,
            "ratio_range": (min(per_rep), max(per_rep)), "p_eot": p_eot}


def report_rollout(r: dict, sizes: Sizes) -> str:
    m = r["median"]
    out = ["## 4. Framework overhead: kit rollout + update vs a bare transformers loop", ""]
    out.append(
        f"One PBSD iteration on {r['tasks']} tasks of `{PAIR_ENV}` (student prompt ≈ {m['student_prompt_mean']:.0f} tokens, "
        f"teacher prompt ≈ {m['teacher_prompt_mean']:.0f}), full fine-tuning (frozen teacher copy), sampling at T=1 with "
        f"top_k=0, top_p=1, `max_new_tokens={r['max_new_tokens']}`. So that the random model ends its turns, its "
        f"end-of-turn embedding is calibrated to p(end of turn) = {r['p_eot'][1]:.3f} at the generation prompt "
        f"(`build_tiny_model(eot_mean_length={r['max_new_tokens'] / 2:g})` alone gave {r['p_eot'][0]:.1e} for this model). **Kit**: `Collector.collect` (HFEngine) of the student samples and of the "
        "teacher samples (teacher prompt, teacher weights), each episode stepped in the environment, then one "
        "`PBSD.loss` update (teacher forward, student forward, backward, clip, AdamW). **Bare**: `model.generate` "
        "(`do_sample=True`) on the same prompt ids, left-padded in one batch per view, forced "
        "(`min_new_tokens = max_new_tokens`) to the kit's number of decoding steps in that view, so both decode the "
        "same number of steps on the same batch shape; then one update on the kit's sequences computing "
        "full-vocabulary logits at every position (`model(...).logits`), selecting action positions, log-softmax, "
        "the same PBSD loss, backward, clip, AdamW. Kit and bare alternate phase by phase (student generation, teacher "
        f"generation, update). Median of {r['reps']} iteration(s) after one warm-up iteration.")
    out.append("")
    rows = [
        ["generate, student view", m["kit_collect_student"], m["bare_gen_student"], m["kit_collect_student"] / m["bare_gen_student"]],
        ["generate, teacher view", m["kit_collect_teacher"], m["bare_gen_teacher"], m["kit_collect_teacher"] / m["bare_gen_teacher"]],
        ["both views: of which env.reset + prompt rendering (kit only)", m["kit_start"], None, None],
        ["both views: of which `engine.generate` vs `model.generate`", m["kit_engine"], m["bare_gen_student"] + m["bare_gen_teacher"],
         m["kit_engine"] / (m["bare_gen_student"] + m["bare_gen_teacher"])],
        ["both views: of which env.step, decoding, trajectories (kit only)", m["kit_rest"], None, None],
        ["update (teacher + student scoring, backward, step)", m["kit_update"], m["bare_update"], m["kit_update"] / m["bare_update"]],
        ["**total**", m["kit_total"], m["bare_total"], m["ratio"]],
    ]
    out.append(table(["phase", "kit (s)", "bare (s)", "kit / bare"], rows))
    out.append("")
    lo_r, hi_r = r["ratio_range"]
    out.append(f"**Overhead ratio (kit / bare, whole iteration): {m['ratio']:.2f}×** (ratio of the medians; "
               f"per iteration {lo_r:.2f}–{hi_r:.2f}). Decoding steps per iteration "
               f"(both views): {m['decode_steps']:.0f}; action tokens kept: {m['action_tokens']:.0f}; "
               f"turns that ended with the end-of-turn token: {m['finished']:.0f} of {2 * r['tasks']} (the others were cut at "
               "`max_new_tokens`: truncated, never stepped in the environment). "
               "The kit's generation phase also renders prompts with the chat template, records each sampled token's "
               "log-probability (its own sampling logits processor), cuts rows at the stop token, builds trajectories "
               "and steps the environments; its update runs the LM head on action positions only, while the bare "
               "update computes logits at every position.")
    out.append("")
    return "\n".join(out)


# ---- report ------------------------------------------------------------------------------------


def machine_info(args) -> list[list]:
    import torch
    import transformers

    def version(mod):
        try:
            return __import__(mod).__version__
        except Exception:
            return "not installed"

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return [
        ["CPU", cpu], ["CPU count (os.cpu_count / usable)", f"{os.cpu_count()} / {affinity}"],
        ["torch threads (intra-op / inter-op)", f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}"],
        ["CPU capability", torch.backends.cpu.get_cpu_capability()],
        ["device used (sections 1, 2, 4)", args.device + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")],
        ["CUDA", f"available ({torch.version.cuda})" if torch.cuda.is_available() else "not available"],
        ["Python", platform.python_version()], ["platform", platform.platform()],
        ["torch", torch.__version__], ["transformers", transformers.__version__], ["trl", version("trl")],
        ["peft", version("peft")], ["gymnasium", version("gymnasium")],
    ]


def write_report(args, results: dict, wall: float) -> str:
    s = args.sizes
    argv = [Path(sys.argv[0]).as_posix() if not os.path.isabs(sys.argv[0]) else os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]
    out = ["# Benchmarks", ""]
    out.append("Written by `scripts/bench_throughput.py` (rerun it to refresh; numbers are from one run on the machine below, "
               "so compare ratios within a run rather than absolute times across machines).")
    out.append("")
    out.append(f"Command: `python {shlex.join(argv)}`" + (" (quick preset: smoke-test sizes, not representative)" if args.quick else ""))
    out.append("")
    out.append(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; total wall time {wall:.0f} s.")
    out.append("")
    out.append(table(["machine", ""], machine_info(args)))
    out.append("")
    if "load" in results:
        start, end = results["load"]
        out.append(f"1-minute load average at start / end: {start:.2f} / {end:.2f} on {os.cpu_count()} CPUs. Other processes "
                   "slow every number alike; compare the ratios, which each section measures in alternation.")
        out.append("")
    out.append(
        f"Model (sections 1, 2, 4): `Qwen2ForCausalLM` built from a config by `pbsd_agents.loading.build_tiny_model`: "
        f"hidden {s.hidden}, {s.layers} layers, intermediate {2 * s.hidden}, tied embeddings, float32, vocabulary "
        f"{results.get('vocab', 'n/a')} from the real Qwen2.5-Instruct tokenizer (`{Path(args.tokenizer).name}`), "
        f"{results.get('model_params', 0) / 1e6:.1f} M parameters, randomly initialised (seed {args.seed}), on `{args.device}`.")
    out.append("")
    for key, fn in (("trl", report_trl), ("memory", report_memory), ("envs", report_envs), ("rollout", report_rollout)):
        if key in results:
            out.append(fn(results[key], s))
    for path in args.append:
        out.append(appendix(Path(path)))
    return "\n".join(out).rstrip() + "\n"


def appendix(path: Path) -> str:
    """Another report of this script, its headings one level down, under an 'Appendix' heading."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = ["#" + ln if ln.startswith("#") else ln for ln in lines]
    return "\n".join([f"## Appendix: another run of this script (`{path.name}`)", ""] + body).rstrip() + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args, args.memory_child)))
        return 0
    setup_torch(args)
    t_start = now()
    tok = load_tokenizer(args.tokenizer)
    probe = build_model(tok, args.sizes, args.seed)
    results: dict = {"vocab": probe.config.vocab_size, "model_params": probe.num_parameters()}
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    del probe
    steps = [(1, "trl", lambda: section_trl(args, tok)), (2, "memory", lambda: section_memory(args)),
             (3, "envs", lambda: section_envs(args)), (4, "rollout", lambda: section_rollout(args, tok))]
    for number, key, fn in steps:
        if number not in args.sections:
            continue
        print(f"[bench] section {number} ({key}) ...", file=sys.stderr, flush=True)
        t0 = now()
        results[key] = fn()
        print(f"[bench] section {number} done in {now() - t0:.1f} s", file=sys.stderr, flush=True)
    results["load"] = (load_start, os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
    text = write_report(args, results, now() - t_start)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
