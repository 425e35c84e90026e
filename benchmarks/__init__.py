"""Benchmarks: accuracy and speed measurements that are too slow for the test suite."""
