"""Benchmarks; run as ``PYTHONPATH=. python -m benchmarks.<name>``."""
