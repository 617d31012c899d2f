"""The paper's headline in one run: the naive baseline vs the full system, on the same pairs, lever by lever.

Pairs: the reserved-occupation evaluation split (real ESCO job text, never trained on). Every step scores
all pairs and reports items/s and quality (AUC, NDCG@10), measured side by side in this process:

1. naive        HF transformers, float32, padded batches in arrival order, raw descriptions (the baseline)
2. + summaries  the same engine on cached extractive summaries (context compression)
3. + vLLM       vLLM pooling runner on token prompts, the worker's batch cuts, prefix caching off
4. + prefix     prefix caching on: [instruction + query] computed once per request
5. + pruned     (``--pruned DIR``) the OSSCAR-pruned scorer instead of the unpruned one

Step 4 (or 5) is the full system's scoring path; the pipeline around it (Kafka, Redis, publish, commit)
measured 1.04x of the raw engine (bench/RESULTS.md §2), so it is not re-run here. Each ratio is to the
previous step; "all together" is the last step over the naive baseline.
"""

from __future__ import annotations

import gc
import itertools
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Step:
    name: str
    items_s: float
    auc: float
    ndcg10: float
    mean_tokens: float


def _timed(n: int, fn: Callable[[], list[float]]) -> tuple[float, list[float]]:
    gc.collect()
    t0 = time.perf_counter()
    scores = fn()
    return n / (time.perf_counter() - t0), scores


def run_headline(
    scorer: Path,
    *,
    pruned: Path | None = None,
    queries: int = 40,
    seed: int = 7,
    hf_batch_size: int = 16,
    max_batch_items: int = 512,
    max_batch_tokens: int = 16384,
    max_doc_chars: int = 1500,
    summary_tokens: int = 128,
    dtype: str = "float32",
) -> dict[str, Any]:
    from bench.worker_bench import batch_cuts
    from compress.data import generate_split
    from compress.evaluate import render_doc
    from compress.metrics import evaluate_scores
    from engine.engines import HfEngine, VllmEngine
    from engine.prompt import PromptBuilder, PromptTemplate

    postings, pairs = generate_split("heldout", queries, seed=seed)
    tmpl = PromptTemplate.qwen3_reranker()
    raw_docs = {j: render_doc(postings[j], "raw", max_doc_chars=max_doc_chars) for j in {p.job_id for p in pairs}}
    sum_docs = {j: render_doc(postings[j], "summary", budget_tokens=summary_tokens) for j in raw_docs}
    n = len(pairs)
    steps: list[Step] = []

    def record(name: str, items_s: float, scores: Sequence[float], tokens: float) -> None:
        m = evaluate_scores(pairs, list(scores))
        steps.append(Step(name, round(items_s, 2), round(m["auc"], 4), round(m["ndcg@10"], 4), round(tokens, 1)))
        print(f"{name:<28} {items_s:8.2f} items/s  AUC {m['auc']:.3f}  NDCG@10 {m['ndcg@10']:.3f}", flush=True)

    hf = HfEngine(scorer, dtype=dtype, batch_size=hf_batch_size)  # type: ignore[arg-type]
    for name, docs in (("naive (HF, raw text)", raw_docs), ("+ summaries (HF)", sum_docs)):
        texts = [tmpl.render(p.query, docs[p.job_id]) for p in pairs]
        hf.score(texts[:hf_batch_size])  # warm-up
        rate, scores = _timed(n, lambda e=hf, t=texts: e.score(t))
        record(name, rate, scores, sum(hf.count_tokens(texts)) / n)
    hf.close()
    gc.collect()

    def vllm_steps(model: Path, prefix: bool, name: str) -> None:
        eng = VllmEngine(model, dtype=dtype, max_model_len=1024, enable_prefix_caching=prefix, max_num_seqs=256)
        builder = PromptBuilder(eng.tokenizer, tmpl, max_model_len=1024, max_doc_tokens=summary_tokens + 64)
        # One request per query, its candidates in order: what the worker batches.
        prompts: list[list[int]] = []
        qcache: dict[str, list[int]] = {}
        for p in pairs:
            qids = qcache.setdefault(p.query, builder.query_ids(p.query))
            dids = builder.doc_ids([(p.job_id, "h")], [sum_docs[p.job_id]])[0]
            prompts.append(builder.build(qids, dids))
        cuts = batch_cuts(prompts, max_batch_items, max_batch_tokens)
        eng.score_tokens(prompts[:32])  # warm-up (other shapes than the measured run's cache entries)
        eng.reset_prefix_cache()

        def score_all() -> list[float]:
            out: list[float] = []
            for chunk in cuts:
                out.extend(eng.score_tokens(chunk))
            return out

        rate, scores = _timed(n, score_all)
        record(name, rate, scores, sum(len(p) for p in prompts) / n)
        eng.close()
        gc.collect()

    vllm_steps(scorer, False, "+ vLLM, worker batching")
    vllm_steps(scorer, True, "+ prefix reuse")
    if pruned is not None:
        vllm_steps(pruned, True, "+ pruned scorer")

    ratios = {f"{b.name} / {a.name}": round(b.items_s / a.items_s, 2) for a, b in itertools.pairwise(steps)}
    ratios["all together / naive"] = round(steps[-1].items_s / steps[0].items_s, 2)
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
        "scorer": str(scorer),
        "pruned": str(pruned) if pruned else None,
        "dtype": dtype,
        "pairs": n,
        "queries": queries,
        "steps": [asdict(s) for s in steps],
        "ratios": ratios,
    }


def print_headline(r: dict[str, Any]) -> None:
    print()
    print(f"# headline — naive baseline vs full system ({r['pairs']} reserved-occupation pairs)")
    print(f"machine: {r['machine']}")
    print()
    print("| step | items/s | mean prompt tokens | AUC | NDCG@10 |")
    print("|---|---:|---:|---:|---:|")
    for s in r["steps"]:
        print(f"| {s['name']} | {s['items_s']:.2f} | {s['mean_tokens']:.0f} | {s['auc']:.3f} | {s['ndcg10']:.3f} |")
    print()
    print("| ratio | value |")
    print("|---|---:|")
    for k, v in r["ratios"].items():
        print(f"| {k} | {v:.2f}x |")
