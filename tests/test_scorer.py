"""The shipped scorer: its manifest (reproducible: the commands that made it), a merge into the packaged base
that equals peft's, the refusal of a base with another hash, that it is the default model, and that it ranks
held-out occupations well through the worker's engine (vLLM) and prompt — so a broken adapter, merge or
prompt change fails here (docs/models.md "Models", bench/RESULTS.md §4d)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.scorer import SHIPPED_ADAPTER, AdapterManifest, ScorerBuildError, build_scorer, merge_lora


def test_manifest_names_base_version_and_command() -> None:
    m = AdapterManifest.read(SHIPPED_ADAPTER)
    assert m.version and m.base_model == "SmolLM2-135M-Instruct" and len(m.base_sha256) == 64
    # Reproducible from the manifest: the full fine-tune's command, then the extraction's.
    assert m.raw["command"][:2] == ["jobscore", "compress-extract-lora"]
    assert m.raw["training"]["fine_tune"]["command"][:2] == ["jobscore", "compress-sft"]
    assert m.raw["data"]["pairs"] > 0 and m.raw["metrics"]["heldout_default"]["auc"] > 0.9
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


def test_the_pruned_scorer_is_the_default_model_and_the_full_one_a_name_away(scorer_dir: Path) -> None:
    import engine.scorer
    from engine.factory import resolve_model
    from engine.pruned_scorer import SHIPPED_PRUNED, PrunedManifest, pruned_scorer_dir
    from engine.tinymodel import default_cache_dir
    from jobscore.settings import WorkerSettings

    # The session's scorer (built once, in the default cache dir; a fresh cache dir is what the demo test and
    # the session fixture build into on a new machine).
    cache = default_cache_dir()
    assert WorkerSettings(model=None).model is None  # unset: the factory's default
    assert resolve_model(None, cache) == resolve_model("scorer", cache) == resolve_model("scorer-pruned", cache)
    assert resolve_model(None, cache) == pruned_scorer_dir(cache) == scorer_dir
    assert scorer_dir.name == PrunedManifest.read(SHIPPED_PRUNED).version
    assert resolve_model("scorer-full", cache) == engine.scorer.scorer_dir(cache)
    assert engine.scorer.scorer_dir(cache).name == AdapterManifest.read(SHIPPED_ADAPTER).version
    full = json.loads((engine.scorer.scorer_dir(cache) / "config.json").read_text())
    pruned = json.loads((scorer_dir / "config.json").read_text())
    assert pruned["intermediate_size"] == full["intermediate_size"] // 2


# Held-out quality through the worker's engine: reserved occupations only (never in training), 12 queries of
# ~6 labelled jobs each, the extractive summary as context (what the worker reads). Measured for the shipped
# adapter on this split (summary context): see QUALITY_FLOOR's comment. Chance is AUC 0.5 and NDCG@10 ~0.6.
HELDOUT_QUERIES, HELDOUT_SEED = 12, 2
# Well above chance and well below what the adapter measures (bench/RESULTS.md §4d: AUC ~0.96, NDCG@10
# ~0.95 on 40 queries): a regression to chance (a broken merge, swapped answer tokens, a prompt change the
# model was not trained on) fails, run-to-run float noise does not.
QUALITY_FLOOR = {"auc": 0.85, "ndcg@10": 0.85}


@pytest.mark.engine
def test_default_scorer_ranks_held_out_occupations_through_the_worker_engine(scorer_vllm_engine: object) -> None:
    from compress.data import generate_split, occupation_of, reserved_ids
    from compress.evaluate import evaluate_model

    postings, pairs = generate_split("heldout", HELDOUT_QUERIES, seed=HELDOUT_SEED)
    reserved = reserved_ids()
    assert all(occupation_of(p.job_id) in reserved for p in pairs), "held-out pairs are reserved occupations"
    (result,) = evaluate_model(
        Path(scorer_vllm_engine.info.path),  # type: ignore[attr-defined]
        pairs,
        postings,
        modes=("summary",),
        engine=scorer_vllm_engine,
    )
    m = result.metrics
    print(f"default (pruned) scorer, held-out summary context: {m}")
    assert m["auc"] >= QUALITY_FLOOR["auc"] and m["ndcg@10"] >= QUALITY_FLOOR["ndcg@10"], m


# One query of each kind of the outside split (compress/outside.py: queries as people type them against
# ~1,000-token postings, read as the summarizer's summaries; reserved occupations only), from the first queries of
# `compress-eval --split outside` (seed 0 + 4). Each must find its occupation's posting among 20 (18 hard
# negatives) in the top 3, and the constrained one must put the posting that meets its constraint (city or
# seniority) above its twin that does not: the split's figures are in bench/RESULTS.md §4f.
OUTSIDE_QUERIES, OUTSIDE_SEED = 30, 4
OUTSIDE_CASES = {"alt_title": "o4-15", "duty": "o4-19", "constrained": "o4-11"}


@pytest.mark.engine
def test_default_scorer_ranks_one_query_of_each_outside_kind(scorer_vllm_engine: object) -> None:
    from compress.evaluate import build_prompts
    from compress.outside import generate_outside_split

    postings, pairs, kinds = generate_outside_split(OUTSIDE_QUERIES, seed=OUTSIDE_SEED)
    for kind, qid in OUTSIDE_CASES.items():
        assert kinds[qid] == kind
        case = [p for p in pairs if p.qid == qid]
        scores = scorer_vllm_engine.score(build_prompts(case, postings, "summary"))  # type: ignore[attr-defined]
        ranked = [p for _, p in sorted(zip(scores, case, strict=True), key=lambda t: -t[0])]
        assert 2 in [p.label for p in ranked[:3]], (kind, case[0].query, [(p.job_id, p.label) for p in ranked[:5]])
        if kind == "constrained":
            by_label = {p.label: s for s, p in zip(scores, case, strict=True) if p.label > 0}
            assert by_label[2] > by_label[1], (case[0].query, by_label)


def test_unpruned_scorer_ranks_held_out_occupations_through_hf() -> None:
    # scorer-full is one name away from the default: the same floor, through plain transformers (its vLLM path is
    # the pruned scorer's, tested above; a second vLLM engine would cost the suite a compile).
    from compress.data import generate_split
    from compress.evaluate import evaluate_model
    from engine.engines import HfEngine

    postings, pairs = generate_split("heldout", HELDOUT_QUERIES, seed=HELDOUT_SEED)
    engine = HfEngine(build_scorer(), dtype="float32", batch_size=16)
    try:
        (result,) = evaluate_model(Path("scorer-full"), pairs, postings, modes=("summary",), engine=engine)
    finally:
        engine.close()
    m = result.metrics
    print(f"unpruned scorer, held-out summary context: {m}")
    assert m["auc"] >= QUALITY_FLOOR["auc"] and m["ndcg@10"] >= QUALITY_FLOOR["ndcg@10"], m


@pytest.mark.engine
def test_enforce_eager_flag_reaches_the_real_vllm_engine(tiny_model: Path, vllm_engine: object) -> None:
    # The flag must arrive at vLLM, not stop at the settings: the engine the factory builds from
    # `jobscore worker --enforce-eager` runs without compilation (vLLM's own config says so) and scores like the
    # session's compiled engine on the same model (float32).
    from app.cli import build_parser
    from app.commands import settings_from
    from engine.factory import engine_from_settings
    from jobscore.settings import WorkerSettings

    ns = build_parser().parse_args(["worker", "--enforce-eager", "--model", str(tiny_model), "--dtype", "float32"])
    engine = engine_from_settings(settings_from(ns, WorkerSettings))
    try:
        assert engine._llm.llm_engine.vllm_config.model_config.enforce_eager is True  # type: ignore[attr-defined]
        prompts = ["Query: electrician\nJob: Electrician. Wiring.\nRelevant?", "Query: nurse\nJob: Baker.\nRelevant?"]
        eager, compiled = engine.score(prompts), vllm_engine.score(prompts)  # type: ignore[attr-defined]
        assert eager == pytest.approx(compiled, abs=1e-4)
    finally:
        engine.close()  # type: ignore[attr-defined]
