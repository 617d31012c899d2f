"""The paper's headline in one run: the naive baseline vs the full system, on the same pairs, lever by lever.

Pairs: the reserved-occupation evaluation split (never trained on), on the chosen corpus — ``postings``
(default: realistic-length postings around real ESCO text, ~900 tokens, `compress.postings`) or
``esco-short`` (bare ESCO descriptions, ~80 words). Every step scores all pairs; the steps:

1. naive        HF transformers, unpruned, float32, padded batches in arrival order, the raw posting (the baseline)
2. + summaries  the same engine on the cached extractive summaries (context compression; summarized once at
                posting time, so not timed here)
3. + vLLM       vLLM's pooling runner on token prompts, the worker's batch cuts, prefix caching off
4. + prefix     prefix caching on, KV blocks small enough to share [instruction + query] (`kv_block_size_for`)
5. + pruned     the OSSCAR-pruned scorer (``--pruned``; the shipped one by default), same engine settings

Every engine is loaded once; then ``rounds`` rounds each time every step on all pairs, the order reversed
every other round (a position effect shows as spread, not as a lever). Per step: the median items/s and the
spread over rounds; each lever is the ratio of medians of consecutive steps; "all together" is the last step
over the naive baseline. Quality (AUC, NDCG@10) per step on the same pairs.

Step 4 (or 5) is the full system's scoring path; the pipeline around it (Kafka, Redis, publish, commit)
measured 0.96–1.04x of the raw engine (bench/RESULTS.md §1a), so it is not re-run here.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.postings import Corpus


@dataclass
class Step:
    name: str
    items_s: float  # median over rounds
    rounds_items_s: list[float]
    auc: float
    ndcg10: float
    mean_tokens: float
    engine: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spread(self) -> str:
        lo, hi = min(self.rounds_items_s), max(self.rounds_items_s)
        return f"{lo:.2f}–{hi:.2f}"


@dataclass
class _Runner:
    name: str
    engine: str
    n: int
    fn: Callable[[], list[float]]
    tokens: float
    before: Callable[[], None] = lambda: None
    rates: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    def run(self) -> float:
        self.before()
        gc.collect()
        t0 = time.perf_counter()
        scores = self.fn()
        rate = self.n / (time.perf_counter() - t0)
        self.rates.append(rate)
        if not self.scores:
            self.scores = scores
        return rate


def run_rounds(runners: list[_Runner], rounds: int) -> None:
    """Every step once per round, the order reversed every other round (a position effect becomes spread)."""
    for r in range(rounds):
        for runner in runners if r % 2 == 0 else list(reversed(runners)):
            rate = runner.run()
            print(f"round {r + 1}/{rounds}  {runner.name:<26} {rate:8.2f} items/s", flush=True)


def run_headline(
    scorer: Path,
    *,
    pruned: Path | None = None,
    corpus: Corpus = "postings",
    queries: int = 40,
    rounds: int = 3,
    seed: int = 7,
    hf_batch_size: int = 16,
    max_batch_items: int = 512,
    max_batch_tokens: int = 16384,
    max_raw_tokens: int | None = None,
    summary_tokens: int = 128,
    dtype: str = "float32",
    kv_block_size: int | None = None,
) -> dict[str, Any]:
    from bench.machine import describe_machine
    from bench.worker_bench import batch_cuts
    from compress.evaluate import render_doc
    from compress.metrics import evaluate_scores
    from compress.postings import corpus_split
    from engine.engines import HfEngine, VllmEngine
    from engine.prompt import PromptBuilder, PromptTemplate

    postings, pairs = corpus_split(corpus, "heldout", queries, seed=seed)
    tmpl = PromptTemplate.qwen3_reranker()
    jobs = sorted({p.job_id for p in pairs})
    # The raw posting, whole: no character cap (``max_raw_tokens`` cuts it, said in the report, if asked).
    raw_docs = {j: render_doc(postings[j], "raw", max_doc_chars=10**9) for j in jobs}
    sum_docs = {j: render_doc(postings[j], "summary", budget_tokens=summary_tokens) for j in jobs}
    n = len(pairs)
    hf = HfEngine(scorer, dtype=dtype, batch_size=hf_batch_size)  # type: ignore[arg-type]
    tok = hf.tokenizer
    if max_raw_tokens:
        for j, text in raw_docs.items():
            ids = tok(text, add_special_tokens=False)["input_ids"]
            raw_docs[j] = text if len(ids) <= max_raw_tokens else tok.decode(ids[:max_raw_tokens])
    raw_lengths = [len(ids) for ids in tok([raw_docs[j] for j in jobs], add_special_tokens=False)["input_ids"]]
    raw_tokens = statistics.mean(raw_lengths)
    sum_tokens = statistics.mean(len(tok(sum_docs[j], add_special_tokens=False)["input_ids"]) for j in jobs)
    max_len = max(2048, 128 + max(raw_lengths))
    cut = f"cut at {max_raw_tokens} tokens" if max_raw_tokens else "not cut"
    print(
        f"{n} pairs, {len(jobs)} postings ({corpus}): raw {raw_tokens:.0f} tokens, summary {sum_tokens:.0f} tokens "
        f"({raw_tokens / sum_tokens:.1f}x shorter); raw text {cut}",
        flush=True,
    )

    runners: list[_Runner] = []
    for name, docs in (("naive (HF, raw text)", raw_docs), ("+ summaries (HF)", sum_docs)):
        texts = [tmpl.render(p.query, docs[p.job_id]) for p in pairs]
        hf.score(texts[:hf_batch_size])  # warm-up
        runners.append(
            _Runner(name, "hf", n, lambda t=texts: hf.score(t), sum(hf.count_tokens(texts)) / n)  # type: ignore[misc]
        )

    engines: list[VllmEngine] = []

    def vllm_runner(model: Path, prefix: bool, name: str) -> _Runner:
        eng = VllmEngine(
            model,
            dtype=dtype,
            max_model_len=max_len,
            enable_prefix_caching=prefix,
            max_num_seqs=256,
            kv_block_size=kv_block_size,
        )
        engines.append(eng)
        builder = PromptBuilder(eng.tokenizer, tmpl, max_model_len=max_len, max_doc_tokens=summary_tokens + 64)
        # One request per query, its candidates in order: what the worker batches.
        prompts: list[list[int]] = []
        qcache: dict[str, list[int]] = {}
        for p in pairs:
            qids = qcache.setdefault(p.query, builder.query_ids(p.query))
            dids = builder.doc_ids([(p.job_id, "h")], [sum_docs[p.job_id]])[0]
            prompts.append(builder.build(qids, dids))
        cuts = batch_cuts(prompts, max_batch_items, max_batch_tokens)
        # Warm-up on other text (the measured prompts must not be cached yet), then an empty cache before each run.
        eng.score_tokens([p[: len(p) // 2] for p in prompts[:32]])

        def score_all() -> list[float]:
            out: list[float] = []
            for chunk in cuts:
                out.extend(eng.score_tokens(chunk))
            return out

        tokens = sum(len(p) for p in prompts) / n
        return _Runner(
            name,
            f"vllm block={eng.kv_block_size or 'default'} prefix={'on' if prefix else 'off'}",
            n,
            score_all,
            tokens,
            before=eng.reset_prefix_cache,
        )

    runners.append(vllm_runner(scorer, False, "+ vLLM, worker batching"))
    runners.append(vllm_runner(scorer, True, "+ prefix reuse"))
    if pruned is not None:
        runners.append(vllm_runner(pruned, True, "+ pruned scorer"))

    run_rounds(runners, rounds)
    hf.close()
    for eng in engines:
        eng.close()
    gc.collect()

    steps: list[Step] = []
    for runner in runners:
        m = evaluate_scores(pairs, runner.scores)
        steps.append(
            Step(
                runner.name,
                round(statistics.median(runner.rates), 3),
                [round(x, 3) for x in runner.rates],
                round(m["auc"], 4),
                round(m["ndcg@10"], 4),
                round(runner.tokens, 1),
                runner.engine,
            )
        )
    ratios = {f"{b.name} / {a.name}": round(b.items_s / a.items_s, 2) for a, b in itertools.pairwise(steps)}
    ratios["all together / naive"] = round(steps[-1].items_s / steps[0].items_s, 2)
    return {
        "machine": describe_machine(),
        "scorer": str(scorer),
        "pruned": str(pruned) if pruned else None,
        "corpus": corpus,
        "dtype": dtype,
        "pairs": n,
        "queries": queries,
        "postings": len(jobs),
        "rounds": rounds,
        "raw_tokens_mean": round(raw_tokens, 1),
        "summary_tokens_mean": round(sum_tokens, 1),
        "settings": {
            "hf_batch_size": hf_batch_size,
            "max_batch_items": max_batch_items,
            "max_batch_tokens": max_batch_tokens,
            "max_raw_tokens": max_raw_tokens,
            "summary_budget_tokens": summary_tokens,
            "kv_block_size": engines[-1].kv_block_size if engines else None,
            "max_model_len": max_len,
            "seed": seed,
        },
        "steps": [asdict(s) for s in steps],
        "ratios": ratios,
    }


def print_headline(r: dict[str, Any]) -> None:
    print()
    print(
        f"# headline — naive baseline vs full system ({r['pairs']} reserved-occupation pairs, corpus {r['corpus']}, "
        f"{r['rounds']} rounds)"
    )
    m = r["machine"]
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m.get('gpu') or 'no GPU'}; {m['versions']}")
    print(f"postings: raw {r['raw_tokens_mean']:.0f} tokens → summary {r['summary_tokens_mean']:.0f} tokens")
    print()
    print("| step | items/s (median) | spread over rounds | mean prompt tokens | AUC | NDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in r["steps"]:
        lo, hi = min(s["rounds_items_s"]), max(s["rounds_items_s"])
        print(
            f"| {s['name']} | {s['items_s']:.2f} | {lo:.2f}–{hi:.2f} | {s['mean_tokens']:.0f} | {s['auc']:.3f} "
            f"| {s['ndcg10']:.3f} |"
        )
    print()
    print("| lever | ratio of medians |")
    print("|---|---:|")
    for k, v in r["ratios"].items():
        print(f"| {k} | {v:.2f}x |")
