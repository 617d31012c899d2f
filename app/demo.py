"""``jobscore demo``: the whole data path on the embedded stack, in one process, then clean up.

postings → summarizer → Redis → requests → worker (vLLM, `--model` or the shipped scorer) → rankings → printed here,
with each request's top 3 marked against the answers the demo knows (real ESCO job text, app/demo_corpus.py).
Topics and consumer groups are unique to the run, so a re-run (or a shared broker) starts clean.
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
import time
import uuid

from prometheus_client import REGISTRY

from app.demo_corpus import DemoCorpus, demo_corpus, ndcg_at
from client import RankingWaiter, new_request, publish_postings, publish_requests, tail
from engine.factory import engine_from_settings
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer, topic_name
from jobscore.settings import SummarizerSettings, WorkerSettings
from jobscore.topics import ensure_topics
from ops.devstack import dev_stack
from schemas import DEAD_LETTERS, SCORE_REQUESTS, DeadLetter, Ranking, ScoreRequest
from summarizer.service import Summarizer
from worker.loop import Worker

log = logging.getLogger(__name__)

WAIT_SUMMARIES_S = 120.0
WAIT_RANKINGS_S = 300.0
DLQ_IDLE_S = 3.0  # the dead letters were acknowledged before the rankings arrived: a short quiet period ends the read
# Bad messages the demo publishes beside its requests, and the dead letter each must get. Two kinds, so the
# printed count shows every dead letter of the run is read (a reader that stopped at the first would say 1).
BAD_REQUESTS: tuple[tuple[bytes, str], ...] = (
    (b'{"schema": "score_request.v1", "query": ', "malformed"),  # cut off mid-message
    (b'{"schema": "score_request.v9", "query": "data engineer", "job_ids": ["j1"]}', "unknown_schema"),
)


def _items_scored() -> float:
    """The worker's count of scores the engine returned (the Prometheus counter; this process only)."""
    return REGISTRY.get_sample_value("jobscore_worker_items_scored_total") or 0.0


def demo(
    settings: WorkerSettings,
    *,
    postings: int,
    requests: int,
    candidates: int,
    use_given_broker: bool,
    long_postings: bool = False,
) -> int:
    run = uuid.uuid4().hex[:8]
    with dev_stack(settings.kafka_bootstrap if use_given_broker else None, settings.redis_url) as (bootstrap, url):
        common = {
            "kafka_bootstrap": bootstrap,
            "redis_url": url,
            "topic_postings": f"jobscore-demo-{run}.postings",
            "topic_requests": f"jobscore-demo-{run}.requests",
            "topic_rankings": f"jobscore-demo-{run}.rankings",
            "topic_dead_letters": f"jobscore-demo-{run}.dlq",
        }
        ws = settings.model_copy(update={**common, "group_id": f"jobscore-demo-{run}-worker"})
        ss = SummarizerSettings(
            **common, group_id=f"jobscore-demo-{run}-summarizer", summarizer_version=ws.summarizer_version
        )
        print(f"[demo] broker {bootstrap}, redis {url}; loading the scoring model ({ws.engine})...", flush=True)
        engine = engine_from_settings(ws)
        try:
            return asyncio.run(_run(ws, ss, engine, postings, requests, candidates, long_postings))
        finally:
            engine.close()


async def _run(
    ws: WorkerSettings,
    ss: SummarizerSettings,
    engine: object,
    n_postings: int,
    n_requests: int,
    n_candidates: int,
    long_postings: bool = False,
) -> int:
    await ensure_topics(ws)
    summarizer = Summarizer(ss)
    worker = Worker(ws, engine)  # type: ignore[arg-type]
    await asyncio.gather(summarizer.start(), worker.start())
    tasks = [asyncio.create_task(summarizer.run()), asyncio.create_task(worker.run())]
    cache = SummaryCache.from_url(ws.redis_url, ws.summarizer_version)
    try:
        # 1. postings → summaries
        corpus = demo_corpus(n_postings, prefix=f"demo-{ws.group_id[-15:-7]}", long=long_postings)
        posted = corpus.postings
        t0 = time.perf_counter()
        await publish_postings(ss, posted)
        ids = [p.job_id for p in posted]
        deadline = time.monotonic() + WAIT_SUMMARIES_S
        while True:
            recs = await cache.get_many(ids)
            have = sum(r is not None for r in recs)
            if have == len(ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {have}/{len(ids)} summaries after {WAIT_SUMMARIES_S:.0f}s")
            await asyncio.sleep(0.1)  # polling Redis for progress; the summarizer runs concurrently
        raw = statistics.mean(r.raw_tokens for r in recs if r)  # type: ignore[union-attr]
        comp = statistics.mean(r.summary_tokens for r in recs if r)  # type: ignore[union-attr]
        # ESCO descriptions are short: a summary's header fields can make it the longer text (the compression pays
        # on real postings of hundreds of tokens; bench/RESULTS.md).
        change = f"{raw / comp:.1f}x shorter" if comp < raw else f"{comp / raw:.1f}x longer: short texts"
        print(
            f"[demo] {len(ids)} postings summarized in {time.perf_counter() - t0:.1f}s "
            f"(~{raw:.0f} → ~{comp:.0f} tokens, {change})",
            flush=True,
        )

        # 2. requests → rankings (one asks for a job that was never posted; BAD_REQUESTS are not requests). Every
        # request's candidates hold its right answers among others, so its ranking can be judged.
        rng = random.Random(11)
        reqs: list[ScoreRequest] = []
        for i, q in enumerate(corpus.queries[:n_requests]):
            right = sorted(corpus.relevant[q.text])
            rest = [j for j in ids if j not in corpus.relevant[q.text]]
            cands = right + rng.sample(rest, max(0, min(n_candidates - len(right), len(rest))))
            rng.shuffle(cands)
            if i == 0:
                cands.append("job-never-posted")
            reqs.append(new_request(q.text, cands, top_k=10, request_id=f"demo-req-{i:03d}"))
        titles = corpus.titles
        # Scores the engine actually returned during this run (rankings carry only each request's top_k).
        scored_before = _items_scored()
        async with RankingWaiter(ws) as waiter:
            t1 = time.perf_counter()
            await publish_requests(ws, reqs)
            producer = make_producer(ws)
            await producer.start()
            for data, _ in BAD_REQUESTS:
                await producer.send_and_wait(topic_name(ws, SCORE_REQUESTS), data)
            await producer.stop()
            rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_RANKINGS_S)
            wall = time.perf_counter() - t1
        _print_rankings(reqs, rankings, titles, corpus)
        scored = _items_scored() - scored_before
        # Every dead letter of this run (the topic is the run's own): read until the topic stays quiet.
        dlq = [m async for _, m in tail(ws, DEAD_LETTERS, from_beginning=True, idle_exit_s=DLQ_IDLE_S)]
        for m in dlq:
            if isinstance(m, DeadLetter):
                print(f"[demo] dead letter: offset {m.offset} ({m.error_type}): {m.reason[:100]}")
        lat = sorted(r.timings.total_ms for r in rankings.values())
        p50 = lat[len(lat) // 2]
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        kinds = sorted(m.error_type if isinstance(m, DeadLetter) else "undecodable" for m in dlq)
        ok = all(r.status == "ok" for r in rankings.values()) and kinds == sorted(k for _, k in BAD_REQUESTS)
        ndcg = statistics.mean(
            ndcg_at([s.job_id for s in rankings[r.request_id].results], corpus.relevant[r.query]) for r in reqs
        )
        hits = sum(any(s.job_id in corpus.relevant[r.query] for s in rankings[r.request_id].results[:3]) for r in reqs)
        print(
            f"[demo] requests={len(rankings)} candidates_scored={scored:.0f} items_per_s={scored / wall:.1f} "
            f"p50_ms={p50:.0f} p95_ms={p95:.0f} dead_letters={len(dlq)} ndcg@10={ndcg:.2f} "
            f"hit@3={hits}/{len(reqs)} model={engine.info.revision} result={'OK' if ok else 'FAILED'}"  # type: ignore[attr-defined]
        )
        return 0 if ok else 1
    finally:
        summarizer.stop()
        worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.close()
        await summarizer.close()
        await cache.close()


def _print_rankings(
    reqs: list[ScoreRequest], rankings: dict[str, Ranking], titles: dict[str, str], corpus: DemoCorpus
) -> None:
    for req in reqs:
        r = rankings[req.request_id]
        first_error = f" ({r.errors[0].job_id}: {r.errors[0].reason})" if r.errors else ""
        print(
            f"[demo] {req.request_id} {req.query!r}: {r.candidates_total} candidates, "
            f"{len(r.errors)} not scored{first_error}; top 3:"
        )
        for s in r.results[:3]:
            mark = "✓" if s.job_id in corpus.relevant[req.query] else " "
            print(f"         {mark} {s.score:.3f}  {titles.get(s.job_id, s.job_id)}")
