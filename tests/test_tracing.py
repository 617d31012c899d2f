"""OpenTelemetry spans of the worker's data path (jobscore/tracing.py), read back with the SDK's in-memory
exporter: per request consume → fetch summaries → score → publish under the caller's traceparent, engine batches
linked to the requests they served; nothing when tracing is off (the default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from client import ScoringClient, new_request
from engine.corpus import postings
from jobscore.settings import CommonSettings, WorkerSettings
from jobscore.tracing import Tracing
from tests.conftest import WAIT_S, wait_until
from tests.helpers import running, seed
from worker.loop import Worker

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_tracing_is_off_by_default() -> None:
    assert WorkerSettings().tracing is False
    off = Tracing.off()
    assert off.request([], "r", "online", 1) is None and off.batch([], 1, 1) is None


@pytest.mark.engine
async def test_request_spans_follow_the_callers_trace_and_batches_link_the_requests_they_served(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
) -> None:
    ws = worker_settings(tracing=True, tracing_exporter="none")
    items = postings(4, seed=51, prefix=f"{ws.group_id}-job")
    await seed(ws, items)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    req = new_request("nurse", [p.job_id for p in items], top_k=2)
    async with running(Worker(ws, vllm_engine, tracing=Tracing(provider))), ScoringClient(ws) as client:
        rid = await client.submit(req, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01".encode())
        ranking = await client.result(rid, WAIT_S)
        assert ranking.status == "ok"
        await wait_until(
            lambda: any(s.name == "jobscore.request" for s in exporter.get_finished_spans()), what="the request span"
        )
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.name == "jobscore.request"]
    # A child of the caller's span, in the caller's trace.
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert request.parent is not None and format(request.parent.span_id, "016x") == CALLER_SPAN
    assert request.attributes["jobscore.request_id"] == rid and request.attributes["jobscore.status"] == "ok"
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id}
    assert set(children) == {"jobscore.fetch_summaries", "jobscore.score", "jobscore.publish"}
    fetch, score, publish = (children[n] for n in ("jobscore.fetch_summaries", "jobscore.score", "jobscore.publish"))
    assert request.start_time <= fetch.start_time <= fetch.end_time <= score.start_time
    assert score.end_time <= publish.start_time <= publish.end_time <= request.end_time
    batches = [s for s in spans if s.name == "jobscore.engine_batch"]
    assert batches and all(s.parent is None for s in batches)
    assert any(link.context.span_id == request.context.span_id for b in batches for link in b.links)
    assert sum(b.attributes["jobscore.batch.items"] for b in batches) == len(items)
