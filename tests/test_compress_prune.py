"""compress.prune: OSSCAR local search, least-squares re-fit, baselines, and the exported pruned model
loading in transformers and serving in vLLM through the worker's engine."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from compress.data import drop_reserved, generate_split
from compress.evaluate import build_prompts
from compress.prune import (
    QWEN3_0_6B,
    count_params,
    keep_ratio_for,
    osscar_select,
    prune_model,
    reconstruction_error,
    refit_down,
)


def _correlated_layer(n: int = 600, d: int = 48, h: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with redundant neurons (low rank + noise): where choosing a subset is a real problem."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g, dtype=torch.float64)
    x = z @ torch.randn(6, d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, d, generator=g, dtype=torch.float64
    )
    x = x * torch.rand(d, generator=g, dtype=torch.float64) * 3
    w = torch.randn(h, d, generator=g, dtype=torch.float64)
    return x, w


@pytest.fixture(scope="module")
def calibration() -> list[str]:
    postings, pairs = generate_split("train", 6, seed=11)
    assert drop_reserved(pairs) == pairs  # calibration never sees the reserved evaluation occupations
    return build_prompts(pairs, postings, "raw", max_doc_chars=300)


class TestOsscarLayer:
    def test_local_search_error_decreases_monotonically_and_matches_direct_error(self) -> None:
        x, w = _correlated_layer()
        G = x.T @ x
        keep, history = osscar_select(G, w, 16)
        assert len(history) > 3, "the start should be improvable on correlated activations"
        assert all(b <= a for a, b in itertools.pairwise(history))
        assert history[-1] < history[0]
        direct = float(((x @ w.T - x[:, keep] @ w[:, keep].T) ** 2).sum())
        assert history[-1] == pytest.approx(direct, rel=1e-9)
        assert reconstruction_error(G, w, keep) == pytest.approx(direct, rel=1e-9)

    def test_local_search_finds_the_optimum_on_a_small_layer(self) -> None:
        x, w = _correlated_layer(n=200, d=10, h=6, seed=3)
        G = x.T @ x
        _keep, history = osscar_select(G, w, 4)
        best = min(reconstruction_error(G, w, list(s)) for s in itertools.combinations(range(10), 4))
        # A swap-local optimum; on this size it is the global one (checked over all 210 subsets).
        assert history[-1] == pytest.approx(best, rel=1e-9)

    def test_keep_all_reproduces_layer_output_exactly(self) -> None:
        x, w = _correlated_layer()
        G = x.T @ x
        keep, history = osscar_select(G, w, G.shape[0])
        assert keep.tolist() == list(range(G.shape[0])) and history == [0.0]
        w_fit = refit_down(G, w, keep, ridge=0.0)
        torch.testing.assert_close(x[:, keep] @ w_fit.T, x @ w.T, rtol=1e-9, atol=1e-9)

    def test_refit_lowers_error_of_the_selected_subset(self) -> None:
        x, w = _correlated_layer()
        G = x.T @ x
        keep, history = osscar_select(G, w, 12)
        w_fit = refit_down(G, w, keep)
        after = float(((x @ w.T - x[:, keep] @ w_fit.T) ** 2).sum())
        assert after < 0.9 * history[-1]
        assert reconstruction_error(G, w, keep, w_fit) == pytest.approx(after, rel=1e-6)


class TestSizes:
    def test_count_params_matches_the_hf_model(self, tiny_model: Path) -> None:
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(tiny_model))
        cfg = json.loads((tiny_model / "config.json").read_text())
        assert count_params(cfg)["total"] == sum(p.numel() for p in m.parameters())

    def test_qwen3_0_6b_counts_and_keep_ratio_for_375m(self) -> None:
        full = count_params(QWEN3_0_6B)
        assert full["total"] == 596_049_920 and full["non_embedding"] == 440_467_456
        # 375M counted without the (tied) embedding: keep ~75% of the MLP (3072 → 2304).
        r = keep_ratio_for(QWEN3_0_6B, 375_000_000, "non_embedding")
        assert r == pytest.approx(0.752, abs=1e-3)
        assert count_params(QWEN3_0_6B, 2304)["non_embedding"] == 374_407_168
        # Counted with the embedding, 375M would leave only ~16% of the MLP.
        assert keep_ratio_for(QWEN3_0_6B, 375_000_000, "total") == pytest.approx(0.163, abs=1e-3)


def _hf_logits(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        return torch.stack([m(**tok(p, return_tensors="pt", add_special_tokens=False)).logits[0, -1] for p in prompts])


class TestPruneModel:
    def test_keep_ratio_one_reproduces_model_outputs(
        self, tiny_model: Path, tmp_path: Path, calibration: list[str]
    ) -> None:
        report = prune_model(tiny_model, tmp_path / "full", 1.0, "osscar", calibration, threads=1)
        assert report.intermediate_after == report.intermediate_before
        assert max(report.layer_error) < 1e-12
        torch.testing.assert_close(
            _hf_logits(tmp_path / "full", calibration[:3]), _hf_logits(tiny_model, calibration[:3]), rtol=0, atol=0
        )

    def test_osscar_beats_baselines_on_layer_error(
        self, tiny_model: Path, tmp_path: Path, calibration: list[str]
    ) -> None:
        reports = {
            m: prune_model(tiny_model, tmp_path / m, 0.5, m, calibration, threads=1)  # type: ignore[arg-type]
            for m in ("osscar", "activation", "magnitude")
        }
        o = reports["osscar"]
        assert o.intermediate_after == 128
        for li, err in enumerate(o.layer_error):
            assert err < reports["activation"].layer_error[li]
            assert o.layer_error_before_refit[li] <= o.layer_error_before_search[li]
        assert reports["magnitude"].layer_error == []  # no calibration: no error to report
        assert o.params_after["total"] < o.params_before["total"]


def test_exported_pruned_model_loads_in_hf_and_serves_in_vllm(
    tiny_model: Path, tmp_path: Path, calibration: list[str]
) -> None:
    from engine.engines import HfEngine, VllmEngine

    out = tmp_path / "pruned"
    report = prune_model(tiny_model, out, 0.4, "osscar", calibration, threads=1)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["intermediate_size"] == report.intermediate_after == round(0.4 * 256)
    meta: dict[str, Any] = json.loads((out / "jobscore_model.json").read_text())
    assert meta["pruning"]["method"] == "osscar"
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(out))
    assert sum(p.numel() for p in m.parameters()) == report.params_after["total"]
    prompts = calibration[:8]
    hf = HfEngine(out, dtype="float32").score(prompts)
    engine = VllmEngine(out, dtype="float32", max_model_len=1024, max_num_seqs=16)
    try:
        got = engine.score(prompts)
    finally:
        engine.close()
    assert got == pytest.approx(hf, abs=2e-3)
    assert all(0.0 <= s <= 1.0 for s in got)
