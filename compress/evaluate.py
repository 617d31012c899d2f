"""Evaluation harness: score a held-out split through the worker's own engine and prompt, report AUC,
NDCG@10 and MRR per context mode (raw posting text or the summarizer's summary).

The prompt is ``PromptTemplate.qwen3_reranker().render(query, doc)``, exactly what the worker sends, and
the scores come from ``engine.engines.VllmEngine`` (production) or ``HfEngine`` (reference).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from compress.data import Pair
from compress.metrics import bootstrap_interval, evaluate_scores
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
    # Every pair's score, in the pairs' order: kept in the JSON so per-kind figures and paired differences can
    # be recomputed later without scoring again.
    scores: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, object]:
        out = {"model": self.model, "mode": self.mode, **self.metrics, "items_per_s": self.items_per_s, **self.extra}
        if self.scores:
            out["scores"] = [round(s, 6) for s in self.scores]
        return out


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
                    list(scores),
                )
            )
            add_intervals(results[-1:], pairs, [scores])
            log.info("evaluated", extra={"model": str(model_dir), "mode": mode, **results[-1].metrics})
    finally:
        if isinstance(engine, str):
            eng.close()  # type: ignore[attr-defined]
    return results


def add_intervals(results: Sequence[EvalResult], pairs: Sequence[Pair], scores: Sequence[Sequence[float]]) -> None:
    """Put each result's 95% bootstrap intervals over queries (compress/metrics.py) for AUC and NDCG@10 in its
    ``extra["ci95"]``; ``scores[i]`` are the scores ``results[i]`` was computed from."""
    for r, sc in zip(results, scores, strict=True):
        r.extra["ci95"] = {m: list(bootstrap_interval(pairs, sc, m)) for m in ("auc", "ndcg@10")}


def _with_ci(r: EvalResult, metric: str) -> str:
    ci = r.extra.get("ci95")
    value = f"{r.metrics[metric]:.3f}"
    if isinstance(ci, dict) and metric in ci:
        lo, hi = ci[metric]
        value += f" [{lo:.3f}, {hi:.3f}]"
    return value


def format_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table: one row per (model, mode); AUC and NDCG@10 with their 95% intervals when computed."""
    lines = [
        "| model | context | AUC | NDCG@10 | MRR | pairs | prompt tokens | items/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.model} | {r.mode} | {_with_ci(r, 'auc')} | {_with_ci(r, 'ndcg@10')} | {m['mrr']:.3f} "
            f"| {int(m['pairs'])} | {float(r.extra.get('mean_prompt_tokens', 0)):.0f} | {r.items_per_s:.1f} |"
        )
    return "\n".join(lines)


def add_breakdown(results: Sequence[EvalResult], pairs: Sequence[Pair], kinds: Mapping[str, str]) -> None:
    """Per query kind (``kinds``: query id → kind), each result's AUC, NDCG@10 and MRR on that kind's queries,
    in ``extra["by_kind"]``."""
    for r in results:
        by_kind: dict[str, dict[str, float]] = {}
        for kind in sorted(set(kinds.values())):
            idx = [i for i, p in enumerate(pairs) if kinds.get(p.qid) == kind]
            m = evaluate_scores([pairs[i] for i in idx], [r.scores[i] for i in idx])
            by_kind[kind] = {k: m[k] for k in ("auc", "ndcg@10", "mrr", "queries")}
        r.extra["by_kind"] = by_kind


def add_differences(
    results: Sequence[EvalResult], pairs: Sequence[Pair], of: Sequence[str], against: Sequence[str]
) -> None:
    """For each result of a model in ``of``, the paired-bootstrap 95% interval of its AUC and NDCG@10 minus
    those of each model in ``against`` in the same context mode (same pairs, same resampled queries), in
    ``extra["diff_ci95"]``: the interval that says whether one model beats another."""
    by_key = {(r.model, r.mode): r for r in results}
    for r in results:
        if r.model not in of:
            continue
        diffs: dict[str, dict[str, list[float]]] = {}
        for other in against:
            o = by_key.get((other, r.mode))
            if o is None or o is r or not o.scores or not r.scores:
                continue
            diffs[other] = {
                m: list(bootstrap_interval(pairs, r.scores, m, baseline=o.scores)) for m in ("auc", "ndcg@10")
            }
        if diffs:
            r.extra["diff_ci95"] = diffs


def format_breakdown(results: Sequence[EvalResult]) -> str:
    """NDCG@10 per query kind (one row per model and mode), and each paired difference's interval."""
    kinds = sorted({k for r in results for k in dict(r.extra.get("by_kind", {}))})  # type: ignore[call-overload]
    lines = []
    if kinds:
        lines += [
            "| model | context | " + " | ".join(f"NDCG@10 {k}" for k in kinds) + " |",
            "|---|---|" + "---:|" * len(kinds),
        ]
        for r in results:
            bk = r.extra.get("by_kind", {})
            assert isinstance(bk, dict)
            lines.append(f"| {r.model} | {r.mode} | " + " | ".join(f"{bk[k]['ndcg@10']:.3f}" for k in kinds) + " |")
    for r in results:
        diffs = r.extra.get("diff_ci95", {})
        assert isinstance(diffs, dict)
        for other, d in diffs.items():
            (alo, ahi), (nlo, nhi) = d["auc"], d["ndcg@10"]
            lines.append(
                f"{r.model} − {other} ({r.mode}): NDCG@10 [{nlo:+.3f}, {nhi:+.3f}], AUC [{alo:+.3f}, {ahi:+.3f}]"
            )
    return "\n".join(lines)


def write_json(path: Path, results: Sequence[EvalResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.row() for r in results], indent=2))


# --- baselines: BM25 and the MiniLM bi-encoder, on the same job text the scorer reads ----------------------

Baseline = Literal["bm25", "minilm"]
BASELINES: tuple[Baseline, ...] = ("bm25", "minilm")


def _bm25_tokens(text: str) -> list[str]:
    from compress.data import STOPWORDS

    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in STOPWORDS:
            continue
        # Light plural folding (engineers → engineer, secretaries → secretary); no stemmer dependency.
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def bm25_scores(
    queries: Sequence[str], docs: Sequence[str], corpus: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """Okapi BM25 of each (query, doc), IDF and mean length from ``corpus`` (the split's distinct job texts)."""
    toks = [_bm25_tokens(d) for d in corpus]
    n = len(toks)
    avg = sum(len(t) for t in toks) / max(1, n)
    df: Counter[str] = Counter()
    for t in toks:
        df.update(set(t))
    idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
    cache: dict[str, tuple[Counter[str], int]] = {}
    out = []
    for q, d in zip(queries, docs, strict=True):
        if d not in cache:
            dt = _bm25_tokens(d)
            cache[d] = (Counter(dt), len(dt))
        tf, dl = cache[d]
        s = 0.0
        for w in set(_bm25_tokens(q)):
            f = tf.get(w, 0)
            if f:
                s += idf.get(w, math.log(1 + (n + 0.5) / 0.5)) * f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avg))
        out.append(s)
    return out


def minilm_scores(
    queries: Sequence[str], docs: Sequence[str], *, batch_size: int = 32, max_len: int = 256
) -> list[float]:
    """Cosine of mean-pooled all-MiniLM-L6-v2 embeddings (the packaged bi-encoder)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from engine.models import minilm_dir

    d = minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(d))
    model = AutoModel.from_pretrained(str(d)).eval()

    def embed(texts: list[str]) -> dict[str, object]:
        out: dict[str, object] = {}
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                chunk = texts[i : i + batch_size]
                enc = tok(chunk, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
                h = model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
                out.update(zip(chunk, e, strict=True))
        return out

    qe = embed(sorted(set(queries)))
    de = embed(sorted(set(docs)))
    return [float(qe[q] @ de[d]) for q, d in zip(queries, docs, strict=True)]  # type: ignore[operator]


def evaluate_baselines(
    pairs: Sequence[Pair],
    postings: dict[str, JobPosted],
    *,
    baselines: Sequence[Baseline] = BASELINES,
    modes: Sequence[ContextMode] = CONTEXT_MODES,
    budget_tokens: int = 128,
    max_doc_chars: int = 1500,
) -> list[EvalResult]:
    """BM25 and MiniLM on the exact job text the scorer reads in each context mode."""
    results = []
    for mode in modes:
        docs_by_job = {
            jid: render_doc(postings[jid], mode, budget_tokens=budget_tokens, max_doc_chars=max_doc_chars)
            for jid in dict.fromkeys(p.job_id for p in pairs)
        }
        queries = [p.query for p in pairs]
        docs = [docs_by_job[p.job_id] for p in pairs]
        for name in baselines:
            t0 = time.perf_counter()
            if name == "bm25":
                scores = bm25_scores(queries, docs, list(docs_by_job.values()))
            else:
                scores = minilm_scores(queries, docs)
            dt = time.perf_counter() - t0
            results.append(EvalResult(name, mode, evaluate_scores(pairs, scores), len(pairs) / dt, scores=list(scores)))
            add_intervals(results[-1:], pairs, [scores])
    return results
