"""Evaluation harness: score a held-out split through the worker's own engine and prompt, report AUC,
NDCG@10 and MRR per context mode (raw posting text or the summarizer's summary).

The prompt is ``PromptTemplate.qwen3_reranker().render(query, doc)``, exactly what the worker sends, and
the scores come from ``engine.engines.VllmEngine`` (production) or ``HfEngine`` (reference).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from compress.data import Pair
from compress.metrics import evaluate_scores
from engine.engines import ScoringEngine
from engine.prompt import PromptTemplate
from schemas import JobPosted
from summarizer.extractive import summarize

log = logging.getLogger(__name__)

ContextMode = Literal["raw", "summary"]
CONTEXT_MODES: tuple[ContextMode, ...] = ("raw", "summary")


def render_doc(posting: JobPosted, mode: ContextMode, *, budget_tokens: int = 128, max_doc_chars: int = 1500) -> str:
    """The job text the model reads: the raw posting (header + description, cut at ``max_doc_chars``) or
    the extractive summary at ``budget_tokens`` (what the summarizer service caches for the worker)."""
    if mode == "summary":
        return summarize(posting, budget_tokens).summary
    head = " | ".join(
        f
        for f in (
            f"Title: {posting.title}" if posting.title else "",
            f"Company: {posting.company}" if posting.company else "",
            f"Location: {posting.location}" if posting.location else "",
        )
        if f
    )
    text = f"{head}\n{posting.description}" if head else posting.description
    # Cut on a word boundary: the candidate is truncated here, never by the engine (which would cut the
    # instruction and query instead, see NOTES on truncate_prompt_tokens).
    return text if len(text) <= max_doc_chars else text[:max_doc_chars].rsplit(" ", 1)[0]


def build_prompts(
    pairs: Sequence[Pair],
    postings: dict[str, JobPosted],
    mode: ContextMode,
    template: PromptTemplate | None = None,
    *,
    budget_tokens: int = 128,
    max_doc_chars: int = 1500,
) -> list[str]:
    t = template or PromptTemplate.qwen3_reranker()
    docs: dict[str, str] = {}
    out = []
    for p in pairs:
        if p.job_id not in docs:
            docs[p.job_id] = render_doc(
                postings[p.job_id], mode, budget_tokens=budget_tokens, max_doc_chars=max_doc_chars
            )
        out.append(t.render(p.query, docs[p.job_id]))
    return out


@dataclass
class EvalResult:
    model: str
    mode: ContextMode
    metrics: dict[str, float]
    items_per_s: float
    extra: dict[str, object] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        return {"model": self.model, "mode": self.mode, **self.metrics, "items_per_s": self.items_per_s, **self.extra}


def open_engine(
    model_dir: Path, engine: Literal["vllm", "hf"] = "vllm", dtype: str = "float32", max_model_len: int = 1024
) -> ScoringEngine:
    from engine.factory import EngineOptions, engine_from_settings

    opts = EngineOptions(engine=engine, dtype=dtype, max_model_len=max_model_len)
    return engine_from_settings(opts, model_dir, max_num_seqs=128)


def evaluate_model(
    model_dir: Path,
    pairs: Sequence[Pair],
    postings: dict[str, JobPosted],
    *,
    modes: Sequence[ContextMode] = CONTEXT_MODES,
    engine: Literal["vllm", "hf"] | object = "vllm",
    dtype: str = "float32",
    max_model_len: int = 1024,
    budget_tokens: int = 128,
    max_doc_chars: int = 1500,
    name: str | None = None,
) -> list[EvalResult]:
    """Score every pair once per context mode with one engine; ``engine`` may be an open engine to reuse."""
    eng = open_engine(model_dir, engine, dtype, max_model_len) if isinstance(engine, str) else engine
    results = []
    try:
        for mode in modes:
            prompts = build_prompts(pairs, postings, mode, budget_tokens=budget_tokens, max_doc_chars=max_doc_chars)
            t0 = time.perf_counter()
            scores = eng.score(prompts)  # type: ignore[attr-defined]
            dt = time.perf_counter() - t0
            tokens = eng.count_tokens(prompts)  # type: ignore[attr-defined]
            results.append(
                EvalResult(
                    name or Path(model_dir).name,
                    mode,
                    evaluate_scores(pairs, scores),
                    len(prompts) / dt,
                    {"mean_prompt_tokens": sum(tokens) / len(tokens)},
                )
            )
            log.info("evaluated", extra={"model": str(model_dir), "mode": mode, **results[-1].metrics})
    finally:
        if isinstance(engine, str):
            eng.close()  # type: ignore[attr-defined]
    return results


def format_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table: one row per (model, mode)."""
    lines = [
        "| model | context | AUC | NDCG@10 | MRR | pairs | prompt tokens | items/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.model} | {r.mode} | {m['auc']:.3f} | {m['ndcg@10']:.3f} | {m['mrr']:.3f} | {int(m['pairs'])} "
            f"| {float(r.extra.get('mean_prompt_tokens', 0)):.0f} | {r.items_per_s:.1f} |"
        )
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[EvalResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.row() for r in results], indent=2))
