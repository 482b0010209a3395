"""Tool-call parser time on degenerate model outputs: seconds per parse, per format and input size.

Each input is built at every size (characters) and parsed in every format; a cell is the best of a few
runs (one run when a parse takes over 0.2 s). Linear parsing shows as a 10x step from 10 k to 100 k.
``--against FILE`` loads another copy of ``tools/parsers.py`` (for instance the previous commit's,
``git show HEAD~1:tools/parsers.py > /tmp/old_parsers.py``) and prints its time beside the current
one. Prints a Markdown table.

    python scripts/bench_parsers.py                                   # fence inputs at 8 k, 32 k, 100 k
    python scripts/bench_parsers.py --input all --size 10000 --size 100000
    python scripts/bench_parsers.py --against /tmp/old_parsers.py --format json
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from types import ModuleType

INPUTS = {
    "fence+spaces": lambda n: "```" + " " * (n - 4) + "x",
    "fence+newlines": lambda n: "```" + "\n" * (n - 4) + "x",
    "json fence+CRLFs": lambda n: "```json" + "\r\n" * ((n - 8) // 2) + "x",
    "<tool_call>s": lambda n: "<tool_call>" * (n // 11),
    "hermes calls": lambda n: '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>' * (n // 60),
    "[+spaces": lambda n: "[" + " " * (n - 2) + "f",
    "nested [": lambda n: "[" * (n // 2) + "]" * (n // 2),
    "python calls": lambda n: "[" + "f(a=1), " * (n // 8) + "]",
}
FENCE_INPUTS = ["fence+spaces", "fence+newlines", "json fence+CRLFs"]


def load_parsers(path: str) -> ModuleType:
    """Import a copy of the parsers module from a file (it needs only the standard library)."""
    spec = importlib.util.spec_from_file_location("_parsers_under_comparison", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench_parsers.py: error: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def best_time(parsers: ModuleType, text: str, fmt: str, repeats: int = 3) -> float:
    """Seconds per parse: the best of ``repeats`` runs, or one run when it is slow."""
    t0 = time.perf_counter()
    parsers.parse_tool_calls(text, fmt)
    best = time.perf_counter() - t0
    if best > 0.2:
        return best
    number = max(1, int(0.01 / max(best, 1e-7)))  # about 10 ms per run
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            parsers.parse_tool_calls(text, fmt)
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _seconds(t: float) -> str:
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", choices=[*INPUTS, "all"], default=None,
                        help="input to time (repeatable; default: the three unclosed-fence inputs)")
    parser.add_argument("--size", action="append", type=int, default=None, metavar="CHARS",
                        help="input size in characters (repeatable; default: 8000, 32000, 100000)")
    parser.add_argument("--format", action="append", choices=["hermes", "json", "python"], default=None,
                        help="format to parse (repeatable; default: all three)")
    parser.add_argument("--against", metavar="FILE", default=None,
                        help="another copy of tools/parsers.py to time beside the current one")
    args = parser.parse_args(argv)
    names = list(INPUTS) if args.input and "all" in args.input else args.input or FENCE_INPUTS
    sizes = args.size or [8_000, 32_000, 100_000]
    if any(n < 16 for n in sizes):
        parser.error("--size must be at least 16 characters")

    from pbsd_agents.tools import parsers as current

    versions = [("current", current)] + ([("against", load_parsers(args.against))] if args.against else [])
    header = ["input", "format", "chars"] + [label for label, _ in versions] + (["ratio"] if args.against else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        for fmt in args.format or ["hermes", "json", "python"]:
            for n in sizes:
                text = INPUTS[name](n)
                times = [best_time(module, text, fmt) for _, module in versions]
                row = [name, fmt, str(len(text))] + [_seconds(t) for t in times]
                if args.against:
                    row.append(f"{times[1] / times[0]:.0f}x")
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
