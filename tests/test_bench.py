"""Benchmark bookkeeping (the measurements themselves are run by hand: bench/RESULTS.md)."""

from __future__ import annotations

import pytest


def test_models_benchmark_reports_paired_median_ratios() -> None:
    """bench-models: ratios are taken within a round, so a round where the whole host was slow cancels out."""
    from bench.models_bench import ModelsResult

    r = ModelsResult(["teacher", "pruned"], 64, 150.0, [[10.0, 14.0], [5.0, 7.5], [10.0, 13.0]])
    assert r.median_items_s() == [10.0, 13.0]
    assert r.median_ratios() == [1.0, 1.4]  # paired: 1.4, 1.5, 1.3 → 1.4 (unpaired medians would say 1.3)
    assert "| pruned | 13.00 | 1.40x |" in r.table()


def test_cpu_engine_benchmark_compares_warm_starts_and_rates() -> None:
    """bench-cpu-engine: ours' first start may fill a cold compile cache, so ready times compare warm starts."""
    from bench.cpu_engine_bench import CpuEngineResult, Start

    r = CpuEngineResult("scorer", 120, 2)
    r.starts = [
        Start("stock", 80.0, 4.0, "[1]"),
        Start("ours", 90.0, 7.0, "[]"),
        Start("stock", 84.0, 4.4, "[1]"),
        Start("ours", 41.0, 6.6, "[]"),
    ]
    m = r.summary()
    assert m["ours_ready_s_first"] == 90.0 and m["ours_ready_s_warm_median"] == 41.0
    assert m["ready_s_ratio_warm"] == pytest.approx(82.0 / 41.0)
    assert m["items_s_ratio"] == pytest.approx(6.8 / 4.2)
    assert "| 4 | ours | [] | 41.0 | 6.60 |" in r.table()
