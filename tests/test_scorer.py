"""The shipped scorer: the adapter merges into the packaged base exactly as peft would, a wrong base is
refused, and — through the worker's own engine and prompt — it ranks held-out (reserved) ESCO occupations
far above chance, so a broken adapter, merge or prompt change fails here."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from compress.data import generate_split
from compress.evaluate import build_prompts
from compress.metrics import evaluate_scores
from engine.scorer import SHIPPED_ADAPTER, AdapterManifest, ScorerBuildError, build_scorer, merge_lora


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scorer()


def test_manifest_names_base_version_and_command() -> None:
    m = AdapterManifest.read(SHIPPED_ADAPTER)
    assert m.version and m.base_model == "SmolLM2-135M-Instruct" and len(m.base_sha256) == 64
    assert "compress-sft" in m.raw["command"] and "--lora" in m.raw["command"]
    assert (SHIPPED_ADAPTER / "adapter_model.safetensors").stat().st_size <= 10 * 1024 * 1024


def test_merge_equals_peft_merge_and_unload() -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.models import smollm2_dir

    base = smollm2_dir(dtype="float32")
    ours = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    assert merge_lora(ours, SHIPPED_ADAPTER) > 0
    theirs = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(SHIPPED_ADAPTER)
    ).merge_and_unload()
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, f"merged weights differ from peft's by {worst}"


def test_a_base_with_another_hash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScorerBuildError, match=r"retrain the adapter"):
        build_scorer(tmp_path, base_sha256="0" * 64)
    assert not any(tmp_path.rglob("config.json")), "nothing is built for a refused base"


@pytest.mark.engine
@pytest.mark.timeout(600)  # building the scorer (~20 s) + loading it in vLLM (~30 s) on 2 shared CPUs
def test_ranks_reserved_occupations_through_the_worker_engine(scorer: Path) -> None:
    """Reserved occupations are never trained on: this is the scorer's held-out quality, in the vLLM engine
    the worker serves it with, on the worker's prompt, in both context modes."""
    from engine.engines import VllmEngine
    from engine.identity import inspect_model

    postings, pairs = generate_split("heldout", 12, seed=101)
    info = inspect_model(scorer)
    assert info.revision == AdapterManifest.read(SHIPPED_ADAPTER).version  # rankings name the adapter
    eng = VllmEngine(scorer, dtype="float32", max_model_len=1024, max_num_seqs=64)
    try:
        results = {}
        for mode in ("raw", "summary"):
            scores = eng.score(build_prompts(pairs, postings, mode, max_doc_chars=600))
            results[mode] = evaluate_scores(pairs, scores)
    finally:
        eng.close()
    print(results)
    # Chance is AUC 0.5 / NDCG@10 ≈ 0.6 on these pairs (2 relevant of ~6); the base model is at chance.
    for mode, m in results.items():
        assert m["auc"] >= 0.85 and m["ndcg@10"] >= 0.85, (mode, m)
    assert statistics.mean(m["auc"] for m in results.values()) >= 0.88
