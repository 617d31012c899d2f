"""Benchmarks: throughput measured side by side in one run (see bench/RESULTS.md)."""
