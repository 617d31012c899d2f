"""The topic plan (jobscore/topics.py, `jobscore topics`): pure plan checks, then what the embedded
broker (tansu) does with it. tansu stores and returns the topic configs we send (DescribeConfigs) but
does not enforce them (retention, compaction, max.message.bytes, min.insync.replicas are real Kafka's
job), and it accepts a replication factor above its single broker: the plan's own check is what
refuses that, and is tested here.
"""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stdout
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord

from app.cli import main as cli_main
from jobscore.kafka import dead_letter, make_consumer, make_producer
from jobscore.settings import CommonSettings
from jobscore.topics import (
    TopicPlanError,
    apply_plan,
    check_against_cluster,
    ensure_topics,
    plan_topics,
    render_strimzi,
)
from ops.devstack import free_port
from schemas import DEAD_LETTERS, POSTINGS, SCORE_REQUESTS
from schemas.topics import ALL_TOPICS


def _settings(**kw: Any) -> CommonSettings:
    return CommonSettings(**kw)


class TestPlan:
    def test_plan_rf3_sets_isr_retention_compaction_and_sizes(self) -> None:
        s = _settings(topic_replication_factor=3, topic_partitions=12)
        plan = plan_topics(s)
        assert [t.role for t in plan.topics] == [spec.role for spec in ALL_TOPICS]
        for t, spec in zip(plan.topics, ALL_TOPICS, strict=True):
            assert (t.partitions, t.replication_factor) == (12, 3)
            assert t.configs["min.insync.replicas"] == "2"
            if spec is not DEAD_LETTERS:
                assert int(t.configs["max.message.bytes"]) == spec.max_bytes + s.topic_message_headroom_bytes
        postings, requests, _bulk, results, dlq, summaries = plan.topics
        assert postings.configs["cleanup.policy"] == "compact" and "retention.ms" not in postings.configs
        assert summaries.configs["cleanup.policy"] == "compact" and "retention.ms" not in summaries.configs
        for t, ms in (
            (requests, s.topic_retention_ms_requests),
            (results, s.topic_retention_ms_rankings),
            (dlq, s.topic_retention_ms_dead_letters),
        ):
            assert t.configs["cleanup.policy"] == "delete" and t.configs["retention.ms"] == str(ms)

    def test_plan_postings_not_compacted_gets_retention(self) -> None:
        postings = plan_topics(_settings(topic_postings_compact=False, topic_retention_ms_postings=-1)).topics[0]
        assert postings.configs["cleanup.policy"] == "delete" and postings.configs["retention.ms"] == "-1"

    def test_plan_isr_above_rf_refused(self) -> None:
        with pytest.raises(TopicPlanError, match=r"min\.insync\.replicas 3 > replication factor 2"):
            plan_topics(_settings(topic_replication_factor=2, topic_min_insync_replicas=3))

    def test_check_single_replica_on_multi_broker_refused_unless_allowed(self) -> None:
        plan = plan_topics(_settings(topic_replication_factor=1))
        with pytest.raises(TopicPlanError, match="--allow-single-replica"):
            check_against_cluster(plan, brokers=3)
        check_against_cluster(plan, brokers=3, allow_single_replica=True)
        check_against_cluster(plan, brokers=1)  # a single dev broker cannot keep more than one copy

    def test_check_rf_above_brokers_refused(self) -> None:
        with pytest.raises(TopicPlanError, match="replication factor 3 but the cluster has 2"):
            check_against_cluster(plan_topics(_settings(topic_replication_factor=3)), brokers=2)

    async def test_sizes_dead_letter_topic_fits_clients_and_largest_dead_letter(self) -> None:
        """Every topic admits its contract's largest value, and the clients can send and fetch it: the
        dead-letter topic is sized from DEAD_LETTERS.max_bytes, the budget dead letters are cut to."""
        s = _settings()
        plan = plan_topics(s)
        dlq = plan.by_name(s.topic_dead_letters)
        assert dlq is not None and int(dlq.configs["max.message.bytes"]) > DEAD_LETTERS.max_bytes
        # A dead letter embeds the original record: its budget must exceed the largest valid input.
        assert DEAD_LETTERS.max_bytes > max(POSTINGS.max_bytes, SCORE_REQUESTS.max_bytes)
        dlq_limit = int(dlq.configs["max.message.bytes"])
        for source in (s.topic_requests, s.topic_postings):
            src = plan.by_name(source)
            assert src is not None
            src_limit = int(src.configs["max.message.bytes"])
            # The worst record the source topic admits: its whole size in headers, plus an oversized
            # value and key as a broker without limits (tansu) would deliver them.
            headers = [(f"h{i}", b"x" * 1000) for i in range(src_limit // 1004)]
            rec = ConsumerRecord(
                source, 0, 7, 0, 0, b"k" * 100_000, b"\xff" * (8 << 20), None, 100_000, 8 << 20, headers
            )
            dl = dead_letter(rec, "worker", "boom " * 10_000, "invalid")
            # the original's headers, kept whole, plus ours (content type, schema tag: well under 1 KiB)
            out_headers = sum(len(k) + len(v) for k, v in rec.headers) + 1024
            size = len(DEAD_LETTERS.encode(dl)) + len(dl.key or b"") + out_headers
            assert dl.truncated and size <= dlq_limit, (source, size, dlq_limit)
        producer = make_producer(s)
        consumer = make_consumer(s, "g", s.topic_dead_letters)
        try:
            for t in plan.topics:
                limit = int(t.configs["max.message.bytes"])
                assert limit <= producer._max_request_size, t.name
                assert limit <= consumer._max_partition_fetch_bytes, t.name
        finally:
            await producer.stop()
            await consumer.stop()

    def test_strimzi_render_is_the_plan(self) -> None:
        s = _settings(topic_replication_factor=3, topic_partitions=6)
        docs = list(yaml.safe_load_all(render_strimzi(plan_topics(s), "prod", "jobs")))
        assert [d["spec"]["topicName"] for d in docs] == [t.name for t in plan_topics(s).topics]
        for d, t in zip(docs, plan_topics(s).topics, strict=True):
            assert d["apiVersion"] == "kafka.strimzi.io/v1beta2" and d["kind"] == "KafkaTopic"
            assert d["metadata"]["labels"]["strimzi.io/cluster"] == "prod" and d["metadata"]["namespace"] == "jobs"
            assert (d["spec"]["partitions"], d["spec"]["replicas"]) == (6, 3)
            assert {k: str(v) for k, v in d["spec"]["config"].items()} == t.configs
            assert isinstance(d["spec"]["config"]["max.message.bytes"], int)  # the CRD wants numbers


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = cli_main(list(argv))
    return rc, out.getvalue()


class TestCli:
    def test_topics_dry_run_offline_prints_plan(self) -> None:
        rc, out = _cli("topics", "--dry-run", "--offline", "--topic-replication-factor", "3")
        assert rc == 0
        assert "jobscore.dead-letters" in out and "min.insync.replicas=2" in out and "cleanup.policy=compact" in out

    def test_topics_strimzi_prints_kafkatopics(self) -> None:
        rc, out = _cli("topics", "--strimzi", "--strimzi-cluster", "c1")
        assert rc == 0
        assert [d["kind"] for d in yaml.safe_load_all(out)] == ["KafkaTopic"] * 6

    def test_topics_no_broker_says_what_to_check(self, capsys: pytest.CaptureFixture[str]) -> None:
        rc = cli_main(["topics", "--kafka-bootstrap", f"127.0.0.1:{free_port()}"])
        assert rc == 1 and "could not connect to Kafka" in capsys.readouterr().err

    def test_topics_isr_above_rf_exits_2(self) -> None:
        rc, _ = _cli("topics", "--dry-run", "--offline", "--topic-min-insync-replicas", "2")
        assert rc == 2


async def _describe(bootstrap: str, names: list[str]) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        parts = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(names)}
        cfg: dict[str, dict[str, str]] = {}
        for resp in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for res in resp.resources:
                cfg[res[3]] = {e[0]: e[1] for e in res[4]}
        return parts, cfg
    finally:
        await admin.close()


class TestBroker:
    async def test_apply_creates_topics_with_planned_configs_then_reports_exists(self, common: dict[str, Any]) -> None:
        s = CommonSettings(**{**common, "topic_partitions": 3, "topic_retention_ms_requests": 3_600_000})
        plan = plan_topics(s)
        first = await apply_plan(s, plan)
        assert [(o.name, o.action) for o in first] == [(t.name, "create") for t in plan.topics]
        parts, cfg = await _describe(s.kafka_bootstrap, [t.name for t in plan.topics])
        for t in plan.topics:
            assert parts[t.name] == 3
            assert {k: cfg[t.name][k] for k in t.configs} == t.configs  # what the broker stored
        assert cfg[s.topic_requests]["retention.ms"] == "3600000"
        second = await apply_plan(s, plan)
        assert {o.action for o in second} == {"exists"}

    async def test_apply_existing_topic_differs_reported_not_altered(self, common: dict[str, Any]) -> None:
        s = CommonSettings(**common)
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(s.topic_requests, 1, 1, topic_configs={"retention.ms": "1000"})])
        finally:
            await admin.close()
        outcomes = {o.name: o for o in await apply_plan(s, plan_topics(s))}
        drift = outcomes[s.topic_requests]
        assert drift.action == "drift"
        assert f"partitions 1 (plan {s.topic_partitions})" in drift.detail and "retention.ms=1000" in drift.detail
        assert outcomes[s.topic_rankings].action == "create"
        parts, cfg = await _describe(s.kafka_bootstrap, [s.topic_requests])
        assert parts[s.topic_requests] == 1 and cfg[s.topic_requests]["retention.ms"] == "1000"
        # services starting (ensure_topics) do not inspect existing topics: no DescribeConfigs needed
        quiet = {o.name: o for o in await apply_plan(s, plan_topics(s), inspect_existing=False)}
        assert quiet[s.topic_requests].action == "exists" and quiet[s.topic_requests].detail == ""

    async def test_apply_rf_above_brokers_refused_nothing_created(self, common: dict[str, Any]) -> None:
        # tansu itself would accept RF 3 on its one broker; the plan's check refuses before creating.
        s = CommonSettings(**{**common, "topic_replication_factor": 3})
        with pytest.raises(TopicPlanError, match="cluster has 1 broker"):
            await apply_plan(s, plan_topics(s))
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            assert s.topic_requests not in set(await admin.list_topics())
        finally:
            await admin.close()

    async def test_ensure_topics_uses_plan_and_extra_names(self, common: dict[str, Any]) -> None:
        s = CommonSettings(**common)
        extra = f"t-{uuid.uuid4().hex[:8]}.other"
        await ensure_topics(s, [s.topic_dead_letters, extra])
        parts, cfg = await _describe(s.kafka_bootstrap, [s.topic_dead_letters, extra])
        dlq = plan_topics(s).by_name(s.topic_dead_letters)
        assert dlq is not None and cfg[s.topic_dead_letters]["max.message.bytes"] == dlq.configs["max.message.bytes"]
        assert parts[extra] == s.topic_partitions

    def test_topics_cli_dry_run_against_broker_creates_nothing(self, common: dict[str, Any]) -> None:
        rc, out = _cli(
            "topics",
            "--dry-run",
            "--kafka-bootstrap",
            common["kafka_bootstrap"],
            "--topic-postings",
            common["topic_postings"],
            "--topic-requests",
            common["topic_requests"],
            "--topic-requests-bulk",
            common["topic_requests_bulk"],
            "--topic-rankings",
            common["topic_rankings"],
            "--topic-dead-letters",
            common["topic_dead_letters"],
            "--topic-summaries",
            common["topic_summaries"],
        )
        assert rc == 0 and out.count("would create") == 6


def test_rankings_topic_has_one_name_and_the_old_setting_still_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One word for the rankings topic (setting, role, AsyncAPI channel, client config); the setting's old
    name (topic_results / JOBSCORE_TOPIC_RESULTS) is still read for a while, with a warning naming the new one."""
    from client import ClientConfig
    from schemas import RANKINGS

    assert RANKINGS.role == "rankings"
    assert CommonSettings().topic_names().of(RANKINGS) == CommonSettings().topic_rankings == "jobscore.rankings"
    monkeypatch.setenv("JOBSCORE_TOPIC_RESULTS", "legacy.rankings")
    with caplog.at_level("WARNING", logger="jobscore"):
        assert CommonSettings().topic_rankings == "legacy.rankings"
    assert "JOBSCORE_TOPIC_RANKINGS" in caplog.text
    assert ClientConfig.from_env().topics.rankings == "legacy.rankings"
    monkeypatch.setenv("JOBSCORE_TOPIC_RANKINGS", "new.rankings")  # the new name wins
    assert CommonSettings().topic_rankings == "new.rankings" == ClientConfig.from_env().topics.rankings
    monkeypatch.delenv("JOBSCORE_TOPIC_RANKINGS")
    assert CommonSettings(topic_results="kw.rankings").topic_rankings == "kw.rankings"  # a keyword, too
