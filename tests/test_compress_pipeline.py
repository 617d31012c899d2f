"""compress.pipeline end to end on the tiny model (HF engine, a handful of pairs): every stage produces
its model, the report has sizes and both context modes, and a rerun resumes instead of redoing work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from compress.data import drop_reserved, load_pairs, occupation_of, reserved_ids
from compress.pipeline import PipelineConfig, run_pipeline
from compress.settings import CompressSettings
from compress.train import TrainConfig


def test_pipeline_prunes_distils_evaluates_and_exports(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tc = TrainConfig(lr=1e-3, threads=1, save_every=1000)
    cfg = PipelineConfig(
        base=tiny_model,
        out=out,
        keep_ratio=0.5,
        methods=("osscar", "magnitude"),
        distil_methods=("osscar",),  # magnitude is compared before fine-tuning only
        train_queries=4,
        distil_queries=3,
        eval_queries=4,
        calibration_prompts=8,
        sft=tc,
        distil=tc,
        export=tmp_path / "export",
    )
    s = CompressSettings(engine="hf", threads=1, max_doc_chars=150)
    result = run_pipeline(cfg, s)
    for d in ("teacher", "pruned-osscar", "pruned-magnitude", "distilled-osscar"):
        assert (out / d / "config.json").exists(), d
    assert not (out / "distilled-magnitude").exists()
    assert json.loads((tmp_path / "export" / "config.json").read_text())["intermediate_size"] == 128
    rows = json.loads((out / "eval.json").read_text())
    assert {(r["model"], r["mode"]) for r in rows} >= {
        ("teacher (unpruned)", "raw"),
        ("osscar 0.5 + distil", "summary"),
    }
    assert "| osscar 0.5 | 128 |" in result["report"] and "| teacher (unpruned) | summary |" in result["report"]
    # The held-out set is the reserved occupations only; the training sets never touch them.
    _, held = load_pairs(out / "data" / "heldout.jsonl")
    assert all(occupation_of(p.job_id) in reserved_ids() for p in held)
    for name in ("train", "distil"):
        _, pairs = load_pairs(out / "data" / f"{name}.jsonl")
        assert drop_reserved(pairs) == pairs
    # A rerun finds every stage done: same rows, nothing retrained.
    mtime = (out / "distilled-osscar" / "model.safetensors").stat().st_mtime
    again = run_pipeline(cfg, s)
    assert again["results"] == result["results"]
    assert (out / "distilled-osscar" / "model.safetensors").stat().st_mtime == mtime
    # A run over fewer methods reports only its own models but keeps the others' rows in eval.json.
    narrow = run_pipeline(replace(cfg, methods=("osscar",)), s)
    assert "magnitude" not in narrow["report"]
    names = {r["model"] for r in json.loads((out / "eval.json").read_text())}
    assert names == {"teacher (unpruned)", "osscar 0.5", "magnitude 0.5", "osscar 0.5 + distil"}
