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


def test_model_flops_per_token_count_the_linear_layers_and_causal_attention() -> None:
    """bench MFU: SmolLM2-135M is 0.212 GFLOP per token in its linear layers (NOTES.md: ~0.22)."""
    from bench.flops import ModelShape, model_flops_per_token

    smol = ModelShape(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64)
    per_layer = 2 * (576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536)
    assert model_flops_per_token(smol) == 30 * per_layer == pytest.approx(0.2123e9, rel=1e-3)
    # Attention at 100 tokens of context: QKᵀ and AV over the average causal span (50) per head.
    assert model_flops_per_token(smol, 100) - model_flops_per_token(smol) == 30 * 4 * 9 * 64 * 50
    pruned = ModelShape(hidden=576, intermediate=768, layers=30, heads=9, kv_heads=3, head_dim=64)
    assert model_flops_per_token(pruned) / model_flops_per_token(smol) == pytest.approx(0.625, abs=0.01)


def test_gemm_rate_measures_each_shape_of_the_model_and_mfu_is_its_share() -> None:
    from bench.flops import ModelShape, gemm_rate, mfu, model_flops_per_token

    tiny = ModelShape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16)
    rate = gemm_rate(tiny, tokens=64, seconds=0.05)
    assert set(rate.per_shape) == {"64x64", "64x32", "64x128", "128x64"}
    assert rate.flops_s > 0 and all(v > 0 for v in rate.per_shape.values())
    tokens_s = rate.flops_s / model_flops_per_token(tiny, 10) / 2  # half the rate
    assert mfu(tokens_s, tiny, 10, rate)["mfu"] == pytest.approx(0.5, abs=1e-3)


def test_headline_runs_every_step_each_round_and_reverses_the_order() -> None:
    """bench-headline: ≥ 3 rounds, the step order reversed every other round, the median per step."""
    from bench.headline import _Runner, run_rounds

    calls: list[str] = []

    def runner(name: str) -> _Runner:
        return _Runner(name, "x", 10, lambda: calls.append(name) or [0.5] * 10, 100.0)

    runners = [runner("a"), runner("b"), runner("c")]
    run_rounds(runners, 3)
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert all(len(x.rates) == 3 and x.scores == [0.5] * 10 for x in runners)


def test_gpu_check_script_parses_and_refuses_a_host_without_a_gpu(tmp_path: object) -> None:
    """scripts/gpu-check.sh (docs/deploying.md "GPU"): valid bash; on a host without nvidia-smi it installs nothing
    and says where to run it."""
    import shutil
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU host: the script would run for real")
    p = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True, check=False)
    assert p.returncode == 2 and "run this on a CUDA host" in p.stderr
    text = script.read_text()
    for step in ("vllm==0.32.0", "bench --config qwen3-0.6b --dtype bfloat16", "bench-headline --dtype bfloat16"):
        assert step in text
