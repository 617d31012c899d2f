"""Benchmark bookkeeping (the measurements themselves are run by hand: bench/RESULTS.md)."""

from __future__ import annotations


def test_models_benchmark_reports_paired_median_ratios() -> None:
    """bench-models: ratios are taken within a round, so a round where the whole host was slow cancels out."""
    from bench.models_bench import ModelsResult

    r = ModelsResult(["teacher", "pruned"], 64, 150.0, [[10.0, 14.0], [5.0, 7.5], [10.0, 13.0]])
    assert r.median_items_s() == [10.0, 13.0]
    assert r.median_ratios() == [1.0, 1.4]  # paired: 1.4, 1.5, 1.3 → 1.4 (unpaired medians would say 1.3)
    assert "| pruned | 13.00 | 1.40x |" in r.table()
