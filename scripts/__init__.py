"""Runnable recipes, studies and benchmarks (``python scripts/NAME.py --help``); importable as ``scripts.NAME`` in tests."""
