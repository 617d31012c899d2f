"""Reply topics (docs/publishing.md "Reply topics"): a request's ``reply_topic`` must be a legal Kafka topic name
(else the request is dead-lettered ``invalid`` at ``$.reply_topic``) and must exist (else the answer goes to the
rankings topic at once, counted and logged once — no retry storm, no false not-ready on the broker)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from client import RankingWaiter, ScoringClient, new_request, publish_requests, tail
from engine.corpus import postings
from jobscore.health import HEALTH
from jobscore.kafka import make_producer
from jobscore.settings import CommonSettings, WorkerSettings
from jobscore.topics import TopicPlanError, plan_topics
from schemas import DEAD_LETTERS, DeadLetter
from tests.conftest import WAIT_S
from tests.helpers import running, seed
from worker.loop import Worker

# Far below the ~200 s a missing reply topic once took (every send retried, each waiting for metadata).
FALLBACK_WAIT_S = 30.0


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("jobscore_worker_reply_topic_fallback_total", {"reason": reason}) or 0.0


def test_reply_topic_names_follow_kafkas_rule_in_client_and_topic_plan() -> None:
    for bad in ("bad topic name!", ".", "..", "a/b", ""):
        with pytest.raises(ValueError, match="legal Kafka topic name"):
            new_request("q", ["j"], reply_topic=bad)
        if bad:
            with pytest.raises(ValueError, match="legal Kafka topic name"):
                ScoringClient(CommonSettings(), reply_topic=bad)
    assert new_request("q", ["j"], reply_topic="svc-1.rankings_v2").reply_topic == "svc-1.rankings_v2"
    # `jobscore topics --reply-topic NAME` plans it like the rankings topic; an illegal name is refused.
    plan = plan_topics(CommonSettings(), ["svc.rankings"])
    reply, rankings = plan.by_name("svc.rankings"), plan.by_name(CommonSettings().topic_rankings)
    assert reply is not None and rankings is not None and reply.role == "reply"
    assert reply.configs == rankings.configs and reply.partitions == rankings.partitions
    with pytest.raises(TopicPlanError, match="not a legal Kafka topic name"):
        plan_topics(CommonSettings(), ["bad name"])


@pytest.mark.engine
async def test_illegal_reply_topic_is_dead_lettered_invalid_and_a_missing_one_falls_back_at_once(
    vllm_engine: Any,
    worker_settings: Callable[..., WorkerSettings],
    topics: CommonSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = worker_settings()
    items = postings(3, seed=21, prefix=f"{ws.group_id}-job")
    await seed(ws, items)
    ids = [p.job_id for p in items]
    # Written as a client in another language would: the Python client refuses the name itself.
    illegal = {"schema": "score_request.v1", "request_id": f"{ws.group_id}-illegal", "query": "nurse"}
    illegal |= {"candidates": ids, "reply_topic": "bad topic name!"}
    missing = new_request("nurse", ids, top_k=2, reply_topic=f"{ws.group_id}.never-created")
    before = fallbacks("missing")
    caplog.set_level(logging.WARNING)
    async with running(Worker(ws, vllm_engine)) as task, RankingWaiter(ws) as waiter:
        producer = make_producer(ws)
        await producer.start()
        try:
            await producer.send_and_wait(ws.topic_requests, json.dumps(illegal).encode(), key=b"illegal")
        finally:
            await producer.stop()
        await publish_requests(ws, [missing])
        # The answer meant for a topic that does not exist is on the rankings topic, promptly.
        ranking = await waiter.wait(missing.request_id, FALLBACK_WAIT_S)
        assert ranking.status == "ok" and len(ranking.results) == 2
        assert HEALTH.report()["checks"]["broker"]["ok"], "a client's missing topic is not a broker outage"
        assert not task.done()
        again = new_request("nurse", ids, request_id=missing.request_id + "-2", reply_topic=missing.reply_topic)
        await publish_requests(ws, [again])
        await waiter.wait(again.request_id, FALLBACK_WAIT_S)
    assert fallbacks("missing") - before == 2
    warned = [r for r in caplog.records if "reply topic does not exist" in r.getMessage()]
    assert len(warned) == 1, "logged once per topic, not once per answer"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "produce" in r.getMessage()]
    letters = [m async for _, m in tail(ws, DEAD_LETTERS, from_beginning=True, limit=1, idle_exit_s=WAIT_S)]
    (letter,) = [m for m in letters if isinstance(m, DeadLetter)]
    assert letter.key == b"illegal" and letter.error_type == "invalid" and "$.reply_topic" in letter.reason
