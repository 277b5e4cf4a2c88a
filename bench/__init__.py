"""Benchmarks; messages.py is importable as bench.messages."""
