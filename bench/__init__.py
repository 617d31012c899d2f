"""Benchmarks: throughput measured side by side in one run (see bench/RESULTS.md).

Layer: top. May import every package below it (schemas, engine, jobscore, summarizer, worker, compress);
never imported by them. Its commands are registered by app/.
"""
