"""Benchmarks: accuracy and speed measurements too slow for the test suite; run as ``python -m benchmarks.<name>``."""
