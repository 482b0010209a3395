#!/usr/bin/env python
"""Throughput and memory benchmarks of the kit; writes docs/BENCHMARKS.md.

    python scripts/bench_throughput.py --data-dir DATA             # full run (a few minutes on 2 CPU cores)
    python scripts/bench_throughput.py --data-dir DATA --quick     # small sizes (what the slow test runs)
    python scripts/bench_throughput.py --data-dir DATA --sections 1,3

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

``--data-dir`` is a folder holding ``tokenizers/qwen2.5-instruct`` (or pass ``--tokenizer``) and the
loader envs' files (``bfcl/``, ``gsm8k/``, ``tau_bench/``). Each section is a module of
``scripts/bench/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

# Run as a file, this script's folder is on sys.path: its sections are the `bench` package beside it.
from bench import envs, memory, pbsd_update, rollout
from bench.common import FULL, QUICK, Sizes, build_model, load_tokenizer, now, setup_torch, table

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {1: ("trl", pbsd_update), 2: ("memory", memory), 3: ("envs", envs), 4: ("rollout", rollout)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: " + "; ".join(f"{n} = {mod.TITLE}" for n, (_, mod) in SECTIONS.items()) + ".",
    )
    p.add_argument("--quick", action="store_true", help="small model and few steps (a smoke test, ~1-2 min)")
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="markdown report to write (default: docs/BENCHMARKS.md)")
    p.add_argument("--sections", default="1,2,3,4", help="comma-separated sections to run (default: all)")
    p.add_argument("--data-dir", default=None, help="reference data folder: tokenizers/qwen2.5-instruct and the loader "
                   "envs' files (bfcl/, gsm8k/, tau_bench/); loader envs are skipped without it")
    p.add_argument("--tokenizer", default=None, help="Qwen2.5-Instruct tokenizer folder (default: DATA_DIR/tokenizers/qwen2.5-instruct)")
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
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; valid: {', '.join(map(str, SECTIONS))}")
    if args.tokenizer is None and args.data_dir is None:
        p.error("the model uses the Qwen2.5-Instruct tokenizer: pass --tokenizer FOLDER or --data-dir DATA "
                "(with DATA/tokenizers/qwen2.5-instruct)")
    args.tokenizer = args.tokenizer or str(Path(args.data_dir) / "tokenizers" / "qwen2.5-instruct")
    return args


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
    for key, mod in SECTIONS.values():
        if key in results:
            out.append(mod.report(results[key], s))
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
        print(json.dumps(memory.child(args, args.memory_child)))
        return 0
    setup_torch(args)
    t_start = now()
    tok = load_tokenizer(args.tokenizer)
    probe = build_model(tok, args.sizes, args.seed)
    results: dict = {"vocab": probe.config.vocab_size, "model_params": probe.num_parameters()}
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    del probe
    for number in args.sections:
        key, mod = SECTIONS[number]
        print(f"[bench] section {number} ({key}) ...", file=sys.stderr, flush=True)
        t0 = now()
        results[key] = mod.run(args, tok)
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
