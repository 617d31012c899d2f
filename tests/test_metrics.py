"""/metrics after real traffic through a real summarizer and worker: every series README documents is
exported, with sane values; and the README table lists exactly the registry (it cannot drift)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from client import RankingWaiter, new_request, publish_postings, publish_requests
from engine.corpus import postings
from jobscore import health
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from ops.devstack import free_port
from ops.status import redis_url
from summarizer.service import Summarizer
from tests.conftest import WAIT_S, wait_until
from worker.loop import Worker

ROOT = Path(__file__).resolve().parent.parent

# A README row: | `name` | type | labels | meaning |
ROW = re.compile(r"^\|\s*`(jobscore_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|")


def documented() -> dict[str, tuple[str, set[str]]]:
    """name → (type, labels) from README's metrics table."""
    out: dict[str, tuple[str, set[str]]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = ROW.match(line)
        if m:
            labels = {x.strip(" `") for x in m.group(3).split(",") if x.strip(" `-—")}
            out[m.group(1)] = (m.group(2), labels)
    return out


def registered() -> dict[str, tuple[str, set[str]]]:
    """name → (type, labels) of every jobscore metric in this process's registry (exposition names)."""
    import jobscore.metrics  # noqa: F401  (registers them)

    out: dict[str, tuple[str, set[str]]] = {}
    for fam in REGISTRY.collect():
        if not fam.name.startswith("jobscore_"):
            continue
        name = {"counter": f"{fam.name}_total", "info": f"{fam.name}_info"}.get(fam.type, fam.name)
        collector = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(fam.name)
        labels = set(getattr(collector, "_labelnames", ()))
        if fam.type == "info":
            labels = {k for s in fam.samples for k in s.labels}
        out[name] = (fam.type, labels)
    return out


def test_readme_table_lists_exactly_the_registry() -> None:
    doc, reg = documented(), registered()
    assert doc, "README has no metrics table rows (| `jobscore_…` | type | labels | meaning |)"
    assert set(doc) == set(reg), f"undocumented: {sorted(set(reg) - set(doc))}; stale: {sorted(set(doc) - set(reg))}"
    for name, (typ, labels) in reg.items():
        dtyp, dlabels = doc[name]
        assert dtyp == typ, f"{name}: README says {dtyp}, the code registers a {typ}"
        if typ != "info":
            assert dlabels == labels, f"{name}: README labels {sorted(dlabels)}, code {sorted(labels)}"


@pytest.fixture
def http_port() -> Iterator[int]:
    port = free_port()
    server = health.serve(port, host="127.0.0.1")
    assert server is not None
    yield port
    server.shutdown()
    server.server_close()


def scrape(port: int) -> dict[str, list[Sample]]:
    """Exposition family name (with _total / _info as exported) → its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    fams: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(text):
        name = {"counter": f"{fam.name}_total", "info": f"{fam.name}_info"}.get(fam.type, fam.name)
        fams[name] = list(fam.samples)
    return fams


def value(fams: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    family = sample.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    got = [
        s.value
        for s in fams.get(family, fams.get(sample, []))
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(got)


@contextlib.asynccontextmanager
async def running(svc: Worker | Summarizer) -> AsyncIterator[None]:
    await svc.start()
    task = asyncio.create_task(svc.run())
    try:
        yield
    finally:
        svc.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, WAIT_S)
        await svc.close()


async def send_raw(s: CommonSettings, topic: str, value: bytes) -> None:
    producer = make_producer(s)
    await producer.start()
    try:
        await (await producer.send(topic, value))
    finally:
        await producer.stop()


@pytest.mark.engine
async def test_metrics_after_real_traffic_every_documented_series_sane(
    http_port: int,
    vllm_engine: Any,
    summarizer_settings: Callable[..., SummarizerSettings],
    worker_settings: Callable[..., WorkerSettings],
    topics: CommonSettings,
) -> None:
    ss = summarizer_settings(extractive_embeddings=False)
    ws = worker_settings(max_candidates=12)
    items = postings(10, seed=11, paragraphs=2, prefix=f"{ws.group_id}-job")
    ids = [p.job_id for p in items]
    cache = SummaryCache.from_url(redis_url(ss), ss.summarizer_version)

    async with running(Summarizer(ss)):
        await publish_postings(ss, items)
        await send_raw(ss, ss.topic_postings, b"{not json")  # a summarizer dead letter

        async def summarized() -> bool:
            return all(r is not None for r in await cache.get_many(ids))

        await wait_until(summarized, what="summaries in Redis")
        # The bad record may sit on another partition than the postings, read after they are summarized
        # (a clean-clone run stopped the summarizer before it): wait for its dead letter too.
        await wait_until(
            lambda: value(scrape(http_port), "jobscore_dead_letters_total", stage="summarizer", kind="malformed") >= 1,
            what="the summarizer's dead letter for the malformed posting",
        )
    await cache.close()

    ok = new_request("warehouse manager", [*ids, "never-posted"], top_k=5)  # one missing summary
    big = new_request("nurse", [f"x{i}" for i in range(13)])  # over max_candidates: rejected + dead letter
    async with running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
        await publish_requests(ws, [ok, big])
        await send_raw(ws, ws.topic_requests, b"\xff not a request")  # a worker dead letter
        got = await waiter.wait_all([ok.request_id, big.request_id], WAIT_S)
        assert got[ok.request_id].status == "ok" and got[big.request_id].status == "rejected"

        def lag_seen() -> bool:
            return any(s.labels.get("group") == ws.group_id for s in scrape(http_port).get("jobscore_consumer_lag", []))

        await wait_until(lag_seen, what="the worker's consumer lag gauge")
        # As for the summarizer: the raw bad request may be read after both rankings are out.
        await wait_until(
            lambda: value(scrape(http_port), "jobscore_dead_letters_total", stage="worker", kind="malformed") >= 1,
            what="the worker's dead letter for the undecodable request",
        )
        fams = scrape(http_port)

    # Every documented series is exported (families with labels appear once they have a child).
    missing = [n for n in documented() if n not in fams]
    assert not missing, f"documented but not exported: {missing}"

    # Sane values after this traffic.
    assert value(fams, "jobscore_worker_requests_total", status="ok") >= 1
    assert value(fams, "jobscore_worker_requests_total", status="rejected") >= 1
    assert value(fams, "jobscore_worker_items_scored_total") >= 10
    assert value(fams, "jobscore_worker_missing_summary_total", action="error") >= 1
    assert value(fams, "jobscore_worker_candidate_errors_total", reason="missing_summary") >= 1
    assert value(fams, "jobscore_dead_letters_total", stage="worker", kind="malformed") >= 1
    assert value(fams, "jobscore_dead_letters_total", stage="worker", kind="oversized") >= 1
    assert value(fams, "jobscore_dead_letters_total", stage="summarizer", kind="malformed") >= 1
    assert value(fams, "jobscore_summarizer_postings_total", outcome="summarized") >= 10
    assert value(fams, "jobscore_worker_batch_size_count") >= 1
    assert value(fams, "jobscore_worker_request_latency_seconds_count") >= 1
    assert value(fams, "jobscore_worker_engine_busy_seconds_total") > 0
    assert 0 < value(fams, "jobscore_worker_engine_busy_ratio") <= 1
    lags = [s for s in fams["jobscore_consumer_lag"] if s.labels["group"] in (ws.group_id, ss.group_id)]
    assert {s.labels["topic"] for s in lags} >= {ws.topic_requests}
    assert all(s.value >= 0 for s in lags)
    (build,) = fams["jobscore_build_info"]
    assert build.labels["service"] == "worker" and build.labels["model_id"] == vllm_engine.info.model_id
    assert build.labels["summarizer_version"] == ws.summarizer_version and build.labels["engine"] == ws.engine
    ready = {s.labels["check"]: s.value for s in fams["jobscore_ready"]}
    assert ready["engine"] == 1 and ready["redis"] == 1 and ready["broker"] == 1
    for name in ("jobscore_kafka_errors_total", "jobscore_redis_errors_total"):
        assert all(s.value >= 0 for s in fams[name])


def test_busy_clock_counts_overlapping_calls_once() -> None:
    # Two batches in the engine at once, [0, 3] and [1, 4], then one alone, [6, 7]: busy 4 + 1 seconds, not 3 + 3 + 1.
    from jobscore.metrics import BusyClock

    clock = BusyClock()
    added = [clock.enter(0.0), clock.enter(1.0), clock.leave(3.0), clock.leave(4.0), clock.enter(6.0), clock.leave(7.0)]
    assert clock.total == sum(added) == 5.0 and clock.open == 0
