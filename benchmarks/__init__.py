"""Benchmark scripts: ``python -m benchmarks.<task>``."""
