#!/usr/bin/env python
"""Feed bad configs, flags and resumes to `pbsd-agents` and count how each ends.

Each probe runs the CLI in a subprocess (a tiny budget: 1 step, 2 eval tasks) and is classed as a
**one-line error** (exit 2, no traceback), a **traceback**, a **silent acceptance** (exit 0 where an
error was due), or **ok** (exit 0 where the input is valid, e.g. ``lr: 1e-3`` in YAML).

    python scripts/probe_faults.py                          # this checkout
    python scripts/probe_faults.py --pythonpath OTHER_TREE  # another build of the kit, side by side
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

QUICK = {"--steps": "1", "--tasks-per-step": "2", "--eval-tasks": "2", "--pass-k": "1", "--max-new-tokens": "8",
         "--max-tokens": "16"}

# (name, argv after `pbsd-agents`, YAML config text or None, an error is due)
PROBES = [
    ("lr inf", ["train", "--lr", "inf"], None, True),
    ("lr -1", ["train", "--lr", "-1"], None, True),
    ("steps 0", ["train", "--steps", "0"], None, True),
    ("device tpu", ["train", "--device", "tpu"], None, True),
    ("algo-arg beta=1e-3", ["train", "--algo-arg", "beta=1e-3"], None, False),
    ("algo-arg beta=big", ["train", "--algo-arg", "beta=big"], None, True),
    ("env-arg with an empty key", ["train", "--env-arg", "=3"], None, True),
    ("max-trajectories -5", ["train", "--max-trajectories", "-5"], None, True),
    ("eval-every -1", ["train", "--eval-every", "-1"], None, True),
    ("keep-last 0", ["train", "--keep-last", "0"], None, True),
    ("temperature -1", ["train", "--temperature", "-1"], None, True),
    ("yaml lr: 1e-3", ["train"], "lr: 1e-3\n", False),
    ("yaml steps: ten", ["train"], "steps: ten\n", True),
    ("yaml seed: 1.5", ["train"], "seed: 1.5\n", True),
    ("yaml steps: 1.5", ["train"], "steps: 1.5\n", True),
    ("yaml save_every: '2'", ["train"], "save_every: '2'\n", False),
    ("resume without a run", ["train", "--resume"], None, True),
    ("resume --lr 0.5", ["train", "--resume", "--lr", "0.5"], None, True),
    ("resume --seed 3", ["train", "--resume", "--seed", "3"], None, True),
    ("resume --lora-r 4", ["train", "--resume", "--lora-r", "4"], None, True),
    ("resume --model other", ["train", "--resume", "--model", "no-such-model-folder"], None, True),
    ("resume a finished run", ["train", "--resume"], None, False),
    ("missing data file", ["train", "--env", "pbsd/GSM8K-v0", "--env-arg", "data_path=missing.jsonl"], None, True),
    ("eval --n -5", ["eval", "--n", "-5"], None, True),
    ("eval --pass-k -1", ["eval", "--pass-k", "-1"], None, True),
]


def run_probe(argv: list[str], config: str | None, out: Path, env: dict) -> tuple[int, str]:
    args = list(argv)
    if args[0] == "train":
        given = set(args) | {"--" + line.split(":")[0].strip().replace("_", "-") for line in (config or "").splitlines()}
        args += [x for flag, value in QUICK.items() if flag not in given for x in (flag, value)]
        args += ["--no-progress", "--out", str(out)]
        if config is not None:
            (out.parent / "c.yaml").write_text(config)
            args += ["--config", str(out.parent / "c.yaml")]
    proc = subprocess.run([sys.executable, "-m", "pbsd_agents.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    return proc.returncode, proc.stderr


def classify(rc: int, err: str, error_due: bool) -> str:
    if "Traceback" in err:
        return "traceback"
    if rc == 0:
        return "silent acceptance" if error_due else "ok"
    return "one-line error" if rc == 2 else f"exit {rc}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pythonpath", default=None, help="a folder to put first on PYTHONPATH (another build of the kit)")
    args = p.parse_args(argv)
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([args.pythonpath, env.get("PYTHONPATH", "")])
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    base = work / "base" / "run"  # a finished run for the resume probes
    base.parent.mkdir()
    rc, err = run_probe(["train"], None, base, env)
    if rc != 0:
        print(f"could not make the base run: {err[-500:]}", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for k, (name, argv_, config, error_due) in enumerate(PROBES):
        folder = work / f"p{k}"
        folder.mkdir()
        out = folder / "run"
        if "--resume" in argv_ and name != "resume without a run":
            out = base
        rc, err = run_probe(argv_, config, out, env)
        kind = classify(rc, err, error_due)
        counts[kind] = counts.get(kind, 0) + 1
        last = (err.strip().splitlines() or [""])[-1][:110]
        print(f"{name:28s} {kind:18s} {last}", flush=True)
    print("totals: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
