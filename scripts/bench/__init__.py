"""The sections of ``scripts/bench_throughput.py``, one module each (``run(args, tok)`` and ``report(result, sizes)``),
and their shared helpers (:mod:`.common`)."""
