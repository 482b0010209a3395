"""Section 2: peak memory of PBSD updates, LoRA against full fine-tuning, each in a fresh subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .common import (LR, PAIR_ENV, Sizes, apply, batch_of, build_model, kit_trajectories, load_tokenizer, make_pair_texts,
                     median, now, pbsd_algorithm, setup_torch, table)

TITLE = "peak memory LoRA vs full fine-tuning"
ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "scripts" / "bench_throughput.py"  # its hidden --_memory-child flag runs child()


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


def child(args, mode: str) -> dict:
    """Run in a fresh process: build the policy (LoRA or full), do a few PBSD updates, report RSS."""
    import psutil
    import torch

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
    algo = pbsd_algorithm(tok.pad_token_id)
    rss_setup = proc.memory_info().rss
    times = []
    for _ in range(s.mem_steps):
        t0 = now()
        opt.zero_grad(set_to_none=True)
        loss, _ = algo.loss(batch, policy)
        apply(loss, params, opt)
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


def run(args, tok=None) -> dict:
    results = {}
    for mode in ("lora", "full"):
        cmd = [sys.executable, str(ENTRY), "--_memory-child", mode, "--tokenizer", args.tokenizer, "--seed", str(args.seed),
               "--hidden", str(args.sizes.hidden), "--layers", str(args.sizes.layers), "--pairs", str(args.sizes.pairs),
               "--lora-r", str(args.sizes.lora_r), "--device", args.device]
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


def report(r: dict, sizes: Sizes) -> str:
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
