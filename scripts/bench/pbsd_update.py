"""Section 1: one PBSD update of the kit against one step of TRL's ``DPOTrainer``, same model, pairs and batch."""

from __future__ import annotations

import statistics
import tempfile

from .common import (BETA, GRAD_CLIP, LR, PAIR_ENV, Sizes, apply, batch_of, build_model, fmt, full_logits_seq_logprobs,
                     kit_trajectories, make_pair_texts, median, now, pbsd_algorithm, sync, table)

TITLE = "PBSD vs TRL DPOTrainer step time"


def run(args, tok) -> dict:
    import torch

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
    algo = pbsd_algorithm(pad)
    batch = batch_of(trajs)

    def finish(loss):
        apply(loss, params, opt)
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


def report(r: dict, sizes: Sizes) -> str:
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
