"""Online latency with and without a saturating bulk backfill (`jobscore bench-lanes`).

One real worker (vLLM on the given or tiny model) on the embedded stack (or a given broker/Redis). Phase
"alone": online requests at a fixed rate for a fixed time. Phase "with bulk": the bulk lane is first filled
with more work than the worker can finish in the phase, then the same online load runs. Latency is measured
by the client (publish → ranking received); bulk throughput is the bulk pairs scored during the phase.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Phase:
    name: str
    online_requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    online_items_s: float
    bulk_items_s: float
    latencies_ms: list[float]  # every online request's, sorted: what p50/p99 were read from


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def _online_phase(
    client: Any, ids: list[str], rate: float, seconds: float, candidates: int, top_k: int, corpus: str = "generated"
) -> tuple[list[float], int]:
    from bench.corpora import search_queries

    qs = search_queries(corpus, int(rate * seconds) + 1, seed=int(time.time()))
    lat: list[float] = []

    async def one(q: str) -> None:
        t0 = time.perf_counter()
        await client.score(q, ids[:candidates], top_k=top_k, timeout=300)
        lat.append((time.perf_counter() - t0) * 1e3)

    tasks = []
    start = time.perf_counter()
    for i, q in enumerate(qs):
        # Open-loop arrivals at a fixed rate: the next request is sent on schedule, answered or not.
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(q)))
    await asyncio.gather(*tasks)
    return lat, len(qs) * candidates


async def _run(settings: Any, engine: Any, args: Any) -> list[Phase]:
    from bench.corpora import job_postings, search_queries
    from client import ScoringClient, new_request
    from jobscore.cache import SummaryCache
    from jobscore.metrics import LANE_ITEMS
    from jobscore.topics import ensure_topics
    from summarizer.writer import build_records
    from worker.loop import Worker

    await ensure_topics(settings)
    jobs = job_postings(args.corpus, max(args.candidates, 64), seed=7, prefix="lanes-job")
    cache = SummaryCache.from_url(settings.redis_url, settings.summarizer_version)
    await cache.write(build_records(jobs, settings.summarizer_version, 128))
    await cache.close()
    ids = [p.job_id for p in jobs]
    worker = Worker(settings, engine)
    await worker.start()
    task = asyncio.create_task(worker.run())
    phases: list[Phase] = []

    def bulk_items() -> float:
        return LANE_ITEMS.labels("bulk")._value.get()  # type: ignore[no-any-return]

    try:
        async with ScoringClient(settings) as online, ScoringClient(settings, lane="bulk") as bulk:
            await online.score("warm up", ids[: args.candidates], top_k=1, timeout=600)
            # Warm-up at the phase's rate, not measured: the engine's first batches of each new shape compile
            # (torch.compile on CPU), which otherwise lands as the "alone" phase's slowest requests.
            if args.warmup_s > 0:
                await _online_phase(online, ids, args.rate, args.warmup_s, args.candidates, args.top_k, args.corpus)
            for name in ("alone", "with bulk"):
                if name == "with bulk":
                    n_bulk = args.bulk_requests
                    bulk_before = bulk_items()
                    reqs = [
                        new_request(q, ids[: args.bulk_candidates])
                        for q in search_queries(args.corpus, n_bulk, seed=99)
                    ]
                    await asyncio.gather(*(bulk.submit(r) for r in reqs))
                    # Saturated: bulk work queued and being scored before the online load starts.
                    while worker.batcher.queued("bulk") == 0:
                        await asyncio.sleep(0.05)
                b0, t0 = bulk_items(), time.perf_counter()
                lat, online_pairs = await _online_phase(
                    online, ids, args.rate, args.seconds, args.candidates, args.top_k, args.corpus
                )
                dt = time.perf_counter() - t0
                phases.append(
                    Phase(
                        name,
                        len(lat),
                        round(statistics.median(lat), 1),
                        round(_pct(lat, 0.99), 1),
                        round(max(lat), 1),
                        round(online_pairs / dt, 1),
                        round((bulk_items() - b0) / dt, 1),
                        sorted(round(x, 1) for x in lat),
                    )
                )
                print(f"{name}: {asdict(phases[-1]) | {'latencies_ms': '...'}}", flush=True)
                if name == "with bulk":
                    # Saturated for the whole phase only if bulk work was still waiting at its end (the worker
                    # keeps just a few bulk batches queued; the rest waits on the bulk topic).
                    left = n_bulk * args.bulk_candidates - (bulk_items() - bulk_before)
                    print(f"bulk pairs not yet scored at the end of the phase: {left:.0f} (saturated: > 0)", flush=True)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 600)
        await worker.close()
    return phases


def _one(args: Any, settings: Any) -> list[Phase]:
    """One run: a fresh stack, topics and worker, then the two phases."""
    from engine.factory import engine_from_settings
    from ops.devstack import dev_stack

    with dev_stack(args.kafka_bootstrap, settings.redis_url) as (bootstrap, redis_url):
        run_id = f"{time.time_ns()}"
        s = settings.model_copy(
            update={
                "kafka_bootstrap": bootstrap,
                "redis_url": redis_url,
                "topic_requests": f"bench-{run_id}.requests",
                "topic_requests_bulk": f"bench-{run_id}.requests.bulk",
                "topic_rankings": f"bench-{run_id}.rankings",
                "topic_dead_letters": f"bench-{run_id}.dlq",
                "topic_summaries": f"bench-{run_id}.summaries",
                "group_id": f"bench-lanes-{run_id}",
                "summarizer_version": f"bench-{run_id}",
            }
        )
        engine = engine_from_settings(s)
        try:
            return asyncio.run(_run(s, engine, args))
        finally:
            engine.close()


def _spread(xs: list[float], digits: int = 1) -> dict[str, float]:
    return {k: round(f(xs), digits) for k, f in (("median", statistics.median), ("min", min), ("max", max))}


def run(args: Any, settings: Any) -> dict[str, Any]:
    """``args.runs`` independent runs (each its own stack and worker: no bulk left over from the one before),
    then each phase's median and spread, and the online p99 with bulk over alone per run."""
    from bench.machine import describe_machine

    runs = [_one(args, settings) for _ in range(max(1, getattr(args, "runs", 1)))]
    by_phase = {name: [p for r in runs for p in r if p.name == name] for name in ("alone", "with bulk")}
    p99_ratio = [
        round(b.p99_ms / a.p99_ms, 3)
        for r in runs
        for a, b in [(next(p for p in r if p.name == "alone"), next(p for p in r if p.name == "with bulk"))]
    ]
    return {
        "machine": describe_machine(),  # CPU model and flags, versions, threads (bench/machine.py)
        "model": str(settings.model or "scorer"),
        "max_bulk_batch_items": settings.max_bulk_batch_items,
        "online": f"{args.rate} req/s x {args.candidates} candidates for {args.seconds}s",
        "bulk": f"{args.bulk_requests} requests x {args.bulk_candidates} candidates queued first",
        "runs": [[asdict(p) for p in r] for r in runs],
        "summary": {
            name: {
                "p50_ms": _spread([p.p50_ms for p in ps]),
                "p99_ms": _spread([p.p99_ms for p in ps]),
                "bulk_items_s": _spread([p.bulk_items_s for p in ps]),
            }
            for name, ps in by_phase.items()
        },
        "online_p99_with_bulk_over_alone": {"per_run": p99_ratio, **_spread(p99_ratio, 3)},
    }
