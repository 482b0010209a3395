"""Benchmark: training on one process against two (torchrun, gloo on CPU), DDP against FSDP.

    python scripts/bench_distributed.py               # writes its section of docs/BENCHMARKS.md
    python scripts/bench_distributed.py --quick       # a small model and 2 steps: checks the script runs

One run, side by side on the same machine: the same PBSD job (MathCalc, full fine-tuning of a
randomly initialised 41 M-parameter Qwen2 with the byte tokenizer) as

- 1 process with ``--threads 2`` and 2N tasks per step;
- 2 processes (``torchrun --nproc_per_node 2``) with ``--threads 1`` and N tasks each, DDP;
- the same with FSDP.

It reports throughput (trajectories per second of step time, and trajectory tokens per second of
update time, step 1 left out as warm-up) and each rank's peak resident memory (``VmHWM``), also
above the process's memory before the model loaded. On a GPU (``--device cuda``) it runs the one
process case only (one GPU here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = "<!-- bench_distributed:start -->", "<!-- bench_distributed:end -->"
# hidden 512, 12 layers, 4 heads (2 key/value), MLP 1792: 41.0 M parameters (with the byte tokenizer's 259 embeddings)
FULL = dict(hidden=512, layers=12, heads=4, mlp=1792, steps=4, tasks=2, max_new_tokens=32, max_tokens=64)
QUICK = dict(hidden=32, layers=1, heads=2, mlp=64, steps=2, tasks=2, max_new_tokens=8, max_tokens=16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny model and 2 steps (checks the script, measures nothing)")
    p.add_argument("--device", default="cpu", help="cpu (1 and 2 processes) or cuda (1 process)")
    p.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="markdown file whose section is replaced")
    p.add_argument("--no-write", action="store_true", help="print the section only")
    p.add_argument("--_rank-worker", dest="worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(spec: str) -> None:
    """One process of a case (run under torchrun or alone): train, then print this rank's numbers."""
    from pbsd_agents.trainer import TrainConfig, Trainer

    opts = json.loads(spec)
    before = rss_kb("VmRSS")
    trainer = Trainer(TrainConfig(**opts))
    rank = trainer.parallel.rank
    trainer.train()
    print("RANK " + json.dumps({"rank": rank, "peak_mb": rss_kb("VmHWM") / 1024, "before_mb": before / 1024,
                                "state_mb": held_state_mb(trainer)}), flush=True)


def held_state_mb(trainer) -> float:
    """What this rank holds between steps: its weights (student and frozen teacher), gradients and
    AdamW moments, counting only its own shard of a sharded tensor."""
    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    tensors = [local(p) for p in trainer.policy.model.parameters()]
    tensors += [local(p.grad) for p in trainer.policy.model.parameters() if p.grad is not None]
    if trainer.policy._teacher_copy is not None:
        tensors += [local(p) for p in trainer.policy._teacher_copy.parameters()]
    tensors += [local(v) for st in trainer.optimizer.state.values() for v in st.values() if hasattr(v, "numel")]
    seen, total = set(), 0
    for t in tensors:
        if id(t) not in seen:  # tied weights count once
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total / 2**20


def build_model(size: dict, folder: Path) -> int:
    from pbsd_agents.loading import build_tiny_model, byte_tokenizer

    tok = byte_tokenizer()
    model = build_tiny_model(tok, hidden_size=size["hidden"], num_layers=size["layers"], num_heads=size["heads"],
                             intermediate_size=size["mlp"], eot_mean_length=24.0, eot_token="<|im_end|>")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model.num_parameters()


def run_case(name: str, procs: int, threads: int, parallel: str, size: dict, model: Path, work: Path, device: str) -> dict:
    out = work / name
    opts = dict(model=str(model), env="pbsd/MathCalc-v0", steps=size["steps"], tasks_per_step=size["tasks"] * 2 // procs,
                max_new_tokens=size["max_new_tokens"], max_tokens=size["max_tokens"], eval_every=0, eval_tasks=1,
                pass_k=1, save_every=0, threads=threads, parallel=parallel, progress=False, out=str(out), device=device)
    entry = [str(Path(__file__).resolve()), "--_rank-worker", json.dumps(opts)]
    cmd = [sys.executable, *entry] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *entry]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    ranks = sorted((json.loads(line[5:]) for line in done.stdout.splitlines() if line.startswith("RANK ")),
                   key=lambda r: r["rank"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = rows[1:] or rows  # step 1 warms up
    prev = rows[0] if len(rows) > 1 else {"trajectories": 0, "tokens": 0}
    traj = timed[-1]["trajectories"] - prev["trajectories"]
    tokens = timed[-1]["tokens"] - prev["tokens"]
    return {"case": name, "procs": procs, "threads": threads, "parallel": parallel if procs > 1 else "-",
            "tasks_per_step": opts["tasks_per_step"] * procs, "traj_per_s": traj / sum(r["wall_s"] for r in timed),
            "update_tok_per_s": tokens / sum(r["update_s"] for r in timed),
            "collect_s": sum(r["collect_s"] for r in timed) / len(timed),
            "update_s": sum(r["update_s"] for r in timed) / len(timed),
            "peak_mb": [r["peak_mb"] for r in ranks], "above_start_mb": [r["peak_mb"] - r["before_mb"] for r in ranks],
            "state_mb": [r["state_mb"] for r in ranks],
            "wall_s": time.perf_counter() - t0}


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def report(results: list[dict], params: int, size: dict, device: str, wall: float) -> str:
    def mb(xs, digits=0):
        return " / ".join(f"{x:.{digits}f}" for x in xs)

    base = results[0]
    lines = [START, "## Several processes: DDP and FSDP (`scripts/bench_distributed.py`)", "",
             f"One run on {machine()}, device {device}, {wall:.0f} s in all. PBSD, full fine-tuning of a random "
             f"{params / 1e6:.1f} M-parameter Qwen2 (hidden {size['hidden']}, {size['layers']} layers), "
             f"pbsd/MathCalc-v0, {size['tasks'] * 2} tasks per step in all, {size['steps']} steps (step 1 not timed), "
             f"turns up to {size['max_new_tokens']} tokens. Throughput: trajectories per second of step time; "
             "trajectory tokens per second of update time. Memory: each rank's peak resident set (VmHWM), "
             "and that peak above the process's resident set before the trainer started (torch and the kit "
             "imported), rank 0 / rank 1; held state: the weights (student and frozen teacher), gradients and "
             "AdamW moments a rank keeps between steps, its own shards only.", "",
             "| case | processes × threads | traj/s | × 1 process | update tok/s | collect s/step | update s/step "
             "| peak MB per rank | above start MB per rank | held state MB per rank |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['procs']} × {r['threads']} | {r['traj_per_s']:.2f} | "
                     f"{r['traj_per_s'] / base['traj_per_s']:.2f} | {r['update_tok_per_s']:.0f} | {r['collect_s']:.2f} | "
                     f"{r['update_s']:.2f} | {mb(r['peak_mb'])} | {mb(r['above_start_mb'])} | {mb(r['state_mb'], 1)} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    size = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = build_model(size, work / "model")
        cases = [("1 process", 1, 2, "ddp")]
        if args.device == "cpu":
            cases += [("2 processes, DDP", 2, 1, "ddp"), ("2 processes, FSDP", 2, 1, "fsdp")]
        results = []
        for name, procs, threads, parallel in cases:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_case(name, procs, threads, parallel, size, work / "model", work, args.device))
    section = report(results, params, size, args.device, time.perf_counter() - t0)
    if not (args.no_write or args.quick):
        write(Path(args.out), section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
