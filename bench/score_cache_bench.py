"""Throughput with and without the score cache on a workload with repeats (`jobscore bench-score-cache`).

One real worker (vLLM on the given or default model) on the embedded stack (or a given broker/Redis). The
same request stream is sent twice, side by side in one run: once to a worker with the score cache off, once
to a worker with it on (starting cold: the queries carry this run's id, so no earlier run's entries match).
``--distinct`` distinct (query, candidates) requests are repeated to make ``--requests`` in all (the repeat
share is 1 - distinct/requests), the repeats after the distinct ones, sent in waves of ``--wave`` requests.
Reported per phase: pairs answered per second (wall time from the first publish to the last ranking), pairs
the engine scored, cache hit rate.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class CachePhase:
    name: str
    requests: int
    pairs: int
    seconds: float
    pairs_s: float
    engine_pairs: int
    hit_rate: float


async def _phase(name: str, settings: Any, engine: Any, stream: list[tuple[str, list[str]]], wave: int) -> CachePhase:
    from client import ScoringClient
    from jobscore import metrics
    from worker.loop import Worker

    def hits() -> float:
        return metrics.SCORE_CACHE.labels("hit")._value.get()  # type: ignore[no-any-return]

    worker = Worker(settings, engine)
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        async with ScoringClient(settings) as client:
            await client.score("warm up", stream[0][1], top_k=1, timeout=600)
            h0, items0 = hits(), worker.items_scored
            t0 = time.perf_counter()
            out = []
            for w in range(0, len(stream), wave):
                out += await client.score_many(stream[w : w + wave], top_k=10, timeout=3600)
            dt = time.perf_counter() - t0
            failed = [o for o in out if not hasattr(o, "results")]
            assert not failed, f"{len(failed)} requests failed: {failed[:3]}"
            pairs = sum(len(ids) for _, ids in stream)
            phase = CachePhase(
                name,
                len(stream),
                pairs,
                round(dt, 2),
                round(pairs / dt, 1),
                worker.items_scored - items0,
                round((hits() - h0) / pairs, 3),
            )
            print(f"{name}: {asdict(phase)}", flush=True)
            return phase
    finally:
        worker.stop()
        await asyncio.wait_for(task, 600)
        await worker.close()


async def _run(settings: Any, engine: Any, args: Any, run_id: str) -> list[CachePhase]:
    from bench.corpora import job_postings, search_queries
    from jobscore.cache import SummaryCache
    from jobscore.topics import ensure_topics
    from summarizer.writer import build_records

    jobs = job_postings(args.corpus, max(args.candidates * 4, 64), seed=11, prefix="scorecache-job")
    cache = SummaryCache.from_url(settings.redis_url, settings.summarizer_version)
    await cache.write(build_records(jobs, settings.summarizer_version, 128))
    await cache.close()
    ids = [p.job_id for p in jobs]
    rng = random.Random(args.seed)
    distinct = [
        (f"{q} ({run_id})", rng.sample(ids, args.candidates))
        for q in search_queries(args.corpus, args.distinct, seed=args.seed)
    ]
    # Repeats come after their first occurrence was answered (a user paging back, a re-run backfill, the same
    # popular query minutes later): the distinct requests first, then the repeats, sent in waves of --wave
    # requests, each wave answered before the next. (Duplicates sent at the same instant are all scored: none
    # is answered yet when the others are looked up.)
    rng.shuffle(distinct)
    stream = distinct + [rng.choice(distinct) for _ in range(args.requests - len(distinct))]
    phases = []
    for name, ttl in (("cache off", 0), ("cache on", 3600)):
        tag = name.replace(" ", "-")
        s = settings.model_copy(
            update={
                "score_cache_ttl_s": ttl,
                "topic_requests": f"bench-{run_id}-{tag}.requests",
                "topic_requests_bulk": f"bench-{run_id}-{tag}.requests.bulk",
                "group_id": f"bench-scorecache-{run_id}-{tag}",
            }
        )
        await ensure_topics(s)
        # Both phases start from an empty vLLM prefix cache: the second must not score faster because the
        # first left the same prompts' KV blocks behind.
        if hasattr(engine, "reset_prefix_cache"):
            engine.reset_prefix_cache()
        phases.append(await _phase(name, s, engine, stream, args.wave))
    return phases


def run(args: Any, settings: Any) -> dict[str, Any]:
    from engine.factory import engine_from_settings
    from ops.devstack import dev_stack

    assert 0 < args.distinct <= args.requests, "--distinct must be between 1 and --requests"
    with dev_stack(args.kafka_bootstrap, settings.redis_url) as (bootstrap, redis_url):
        run_id = f"{int(time.time())}"
        s = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "redis_url": redis_url,
                "topic_rankings": f"bench-{run_id}.rankings",
                "topic_dead_letters": f"bench-{run_id}.dlq",
                "summarizer_version": f"bench-{run_id}",
            }
        )
        engine = engine_from_settings(s)
        try:
            phases = asyncio.run(_run(s, engine, args, run_id))
        finally:
            engine.close()
    off, on = phases
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
        "model": str(settings.model or "default model"),
        "workload": f"{args.requests} requests x {args.candidates} candidates, {args.distinct} distinct "
        f"(repeat share {1 - args.distinct / args.requests:.2f}), waves of {args.wave}",
        "phases": [asdict(p) for p in phases],
        "speedup": round(on.pairs_s / off.pairs_s, 2),
    }
