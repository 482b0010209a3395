"""Section 4: framework overhead, one PBSD iteration of the kit (collect + update) against a bare transformers loop."""

from __future__ import annotations

import statistics

from .common import (BETA, LR, PAIR_ENV, Sizes, apply, batch_of, build_model, full_logits_seq_logprobs,
                     make_pair_texts, median, now, pbsd_algorithm, sync, table)

TITLE = "kit rollout+update vs a bare transformers loop"


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


def run(args, tok) -> dict:
    import torch

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
    policy = Policy(model, tok, renderer=renderer)
    collector = Collector.for_policy(policy, batch_size=n, progress=False)
    algo = pbsd_algorithm(tok.pad_token_id)
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
        apply(loss, params, opt)
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
        apply(loss, params, opt)
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


def report(r: dict, sizes: Sizes) -> str:
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
