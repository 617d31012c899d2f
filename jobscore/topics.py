"""Topics as configuration: one plan (partitions, replicas, min.insync.replicas, retention, compaction,
max.message.bytes) built from settings and the schemas' size limits, then applied to a cluster or
rendered as Strimzi ``KafkaTopic`` resources. `jobscore topics` prints, applies or renders it;
`ensure_topics` (below) creates missing topics from the same plan.

Why each topic is configured the way it is:
- postings are keyed by job id and the latest version of a posting is the state (a new summarizer
  version backfills from it): compacted by default, never deleted by age.
- requests, rankings and dead letters are events: deleted after a retention that covers an outage
  (requests, rankings) or an investigation and re-drive (dead letters). None of them is keyed-latest.
- ``max.message.bytes`` of each topic = the largest value its contract admits (``TopicSpec.max_bytes``)
  plus headroom for key, headers and batch framing. The dead-letter topic is sized for the largest dead
  letter a service can produce: its body is cut to ``DEAD_LETTERS.max_bytes`` (jobscore.kafka.dead_letter)
  and it carries the original record's headers untouched, which are bounded only by the source topic's
  own ``max.message.bytes`` — so the limit is the sum of the two.
- replication factor 1 against a multi-broker cluster is refused unless asked for: with one copy,
  ``acks=all`` means "one broker has it" and a broker loss loses committed work.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka.errors import KafkaConnectionError

from jobscore.kafka import KafkaUnreachable, make_admin, unreachable_message
from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, SCORE_REQUESTS_BULK, SUMMARIES, TopicSpec
from schemas.messages import TOPIC_NAME_PATTERN

log = logging.getLogger(__name__)

TOPIC_EXISTS = 36
STRIMZI_API_VERSION = "kafka.strimzi.io/v1beta2"

Action = Literal["create", "exists", "drift"]

# Topics whose records may become dead letters (the summarizer reads postings, the worker requests).
DEAD_LETTER_SOURCES: tuple[TopicSpec[Any], ...] = (POSTINGS, SCORE_REQUESTS, SCORE_REQUESTS_BULK)


class TopicPlanError(ValueError):
    """The plan cannot be applied to this cluster as configured; the message says what to change."""


@dataclass(frozen=True)
class PlannedTopic:
    """One topic as it should exist. ``configs`` are Kafka topic configs (string values, as on the wire)."""

    role: str
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicPlan:
    topics: tuple[PlannedTopic, ...]

    def by_name(self, name: str) -> PlannedTopic | None:
        return next((t for t in self.topics if t.name == name), None)

    def only(self, names: Iterable[str]) -> TopicPlan:
        wanted = set(names)
        return TopicPlan(tuple(t for t in self.topics if t.name in wanted))


@dataclass(frozen=True)
class TopicOutcome:
    """What applying the plan did (or would do) to one topic; ``detail`` explains any drift."""

    name: str
    action: Action
    detail: str = ""


def min_insync(settings: CommonSettings) -> int:
    """Copies acks=all waits for: the setting, else RF-1 (one broker may be down), never below 1."""
    rf = settings.topic_replication_factor
    return settings.topic_min_insync_replicas or max(1, rf - 1)


def _role_names(settings: CommonSettings) -> list[tuple[TopicSpec[Any], str, int]]:
    """Each topic with its name (bound once: `CommonSettings.topic_names`) and its retention setting."""
    retention = {
        POSTINGS.role: settings.topic_retention_ms_postings,
        SCORE_REQUESTS.role: settings.topic_retention_ms_requests,
        SCORE_REQUESTS_BULK.role: settings.topic_retention_ms_requests,
        RANKINGS.role: settings.topic_retention_ms_rankings,
        DEAD_LETTERS.role: settings.topic_retention_ms_dead_letters,
        SUMMARIES.role: -1,  # compacted: the latest event per job id stays
    }
    return [(spec, name, retention[spec.role]) for spec, name in settings.topic_names().bound()]


def plan_topics(settings: CommonSettings, reply_topics: Iterable[str] = ()) -> TopicPlan:
    """The deployment's topics from settings + schema limits. Pure: no cluster is contacted.

    ``reply_topics``: clients' reply topics (a request's ``reply_topic``), planned like the rankings topic
    (same partitions, replicas, retention and size limit: they carry the same messages)."""
    rf = settings.topic_replication_factor
    isr = min_insync(settings)
    if isr > rf:
        raise TopicPlanError(
            f"min.insync.replicas {isr} > replication factor {rf}: every acks=all write would fail; "
            "lower JOBSCORE_TOPIC_MIN_INSYNC_REPLICAS or raise JOBSCORE_TOPIC_REPLICATION_FACTOR"
        )
    topics = []
    limit = {spec.role: spec.max_bytes + settings.topic_message_headroom_bytes for spec in DEAD_LETTER_SOURCES}
    for spec, name, retention_ms in _role_names(settings):
        max_bytes = spec.max_bytes + settings.topic_message_headroom_bytes
        if spec is DEAD_LETTERS:
            max_bytes += max(limit.values())  # the original's headers ride along, uncut
        configs = {"min.insync.replicas": str(isr), "max.message.bytes": str(max_bytes)}
        if (spec is POSTINGS and settings.topic_postings_compact) or spec is SUMMARIES:
            configs["cleanup.policy"] = "compact"
        else:
            configs["cleanup.policy"] = "delete"
            configs["retention.ms"] = str(retention_ms)
        topics.append(PlannedTopic(spec.role, name, settings.topic_partitions, rf, configs))
    rankings = next(t for t in topics if t.role == RANKINGS.role)
    for name in dict.fromkeys(reply_topics):
        if not re.fullmatch(TOPIC_NAME_PATTERN, name):
            raise TopicPlanError(f"reply topic {name!r} is not a legal Kafka topic name (1-249 of [a-zA-Z0-9._-])")
        if name not in {t.name for t in topics}:
            topics.append(PlannedTopic("reply", name, rankings.partitions, rf, dict(rankings.configs)))
    return TopicPlan(tuple(topics))


def check_against_cluster(plan: TopicPlan, brokers: int, allow_single_replica: bool = False) -> None:
    """Refuse a plan the cluster cannot honour (more replicas than brokers) or that would silently
    weaken acks=all (one replica on a cluster that could keep more)."""
    for t in plan.topics:
        if t.replication_factor > brokers:
            raise TopicPlanError(
                f"topic {t.name}: replication factor {t.replication_factor} but the cluster has {brokers} "
                "broker(s); set JOBSCORE_TOPIC_REPLICATION_FACTOR (--topic-replication-factor) at most that"
            )
        if t.replication_factor == 1 and brokers > 1 and not allow_single_replica:
            raise TopicPlanError(
                f"topic {t.name}: replication factor 1 on a {brokers}-broker cluster — acks=all would then wait "
                "for a single copy and a broker loss loses committed work. Set JOBSCORE_TOPIC_REPLICATION_FACTOR=3 "
                "(or at most the broker count), or pass --allow-single-replica if you mean it"
            )


def render_text(plan: TopicPlan) -> str:
    """The plan as a table an operator reads before applying it (`jobscore topics --dry-run`)."""
    rows = [("ROLE", "TOPIC", "PARTITIONS", "RF", "CONFIGS")]
    for t in plan.topics:
        cfg = " ".join(f"{k}={v}" for k, v in sorted(t.configs.items()))
        rows.append((t.role, t.name, str(t.partitions), str(t.replication_factor), cfg))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)


def _typed(value: str) -> int | str:
    """Strimzi's CRD takes numeric configs as numbers; Kafka's wire form is strings."""
    try:
        return int(value)
    except ValueError:
        return value


def strimzi_resources(plan: TopicPlan, cluster: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """The plan as Strimzi ``KafkaTopic`` objects (the Topic Operator applies them on the cluster)."""
    out = []
    for t in plan.topics:
        meta: dict[str, Any] = {
            # Kubernetes names are DNS subdomains: lowercase, '.', '-'; topic names may hold '_'.
            "name": t.name.lower().replace("_", "-"),
            "labels": {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "jobscore"},
        }
        if namespace:
            meta["namespace"] = namespace
        out.append(
            {
                "apiVersion": STRIMZI_API_VERSION,
                "kind": "KafkaTopic",
                "metadata": meta,
                "spec": {
                    "topicName": t.name,
                    "partitions": t.partitions,
                    "replicas": t.replication_factor,
                    "config": {k: _typed(v) for k, v in sorted(t.configs.items())},
                },
            }
        )
    return out


def render_strimzi(plan: TopicPlan, cluster: str, namespace: str | None = None) -> str:
    import yaml

    header = "# Generated by `jobscore topics --strimzi`; regenerate instead of editing.\n"
    return header + str(yaml.safe_dump_all(strimzi_resources(plan, cluster, namespace), sort_keys=False))


async def apply_plan(
    settings: CommonSettings,
    plan: TopicPlan,
    allow_single_replica: bool = False,
    dry_run: bool = False,
    inspect_existing: bool = True,
) -> list[TopicOutcome]:
    """Create the plan's missing topics with their configs; report existing topics that differ from it.

    Existing topics are never altered: changing partitions remaps keys and changing configs on a live
    topic is an operator's decision (kafka-configs.sh / Strimzi). The replication check runs only when
    something is to be created, so services starting against pre-provisioned topics are not refused.
    ``inspect_existing=False`` skips describing existing topics (services at start: their credentials
    may not allow DescribeConfigs, and drift is the `jobscore topics` command's report).
    """
    from aiokafka.admin import NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = make_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in plan.topics if t.name not in existing]
        outcomes: list[TopicOutcome] = []
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            check_against_cluster(TopicPlan(tuple(missing)), brokers, allow_single_replica)
            if not dry_run:
                resp = await admin.create_topics(
                    [NewTopic(t.name, t.partitions, t.replication_factor, topic_configs=t.configs) for t in missing]
                )
                for name, code, *_ in resp.topic_errors:
                    if code not in (0, TOPIC_EXISTS):
                        raise RuntimeError(f"could not create topic {name}: Kafka error code {code}")
                log.info(
                    "topics created",
                    extra={
                        "topics": [t.name for t in missing],
                        "brokers": brokers,
                        "rf": missing[0].replication_factor,
                    },
                )
            outcomes += [TopicOutcome(t.name, "create") for t in missing]
        present = [t for t in plan.topics if t.name in existing]
        if present and not inspect_existing:
            outcomes += [TopicOutcome(t.name, "exists") for t in present]
        elif present:
            described = {d["topic"]: d for d in await admin.describe_topics([t.name for t in present])}
            configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t.name) for t in present])
            actual: dict[str, dict[str, str]] = {}
            for resp in configs:
                for res in resp.resources:
                    actual[res[3]] = {e[0]: e[1] for e in res[4]}
            for t in present:
                diffs = []
                parts = described.get(t.name, {}).get("partitions") or []
                if len(parts) != t.partitions:
                    diffs.append(f"partitions {len(parts)} (plan {t.partitions})")
                rf = min((len(p["replicas"]) for p in parts), default=t.replication_factor)
                if rf != t.replication_factor:
                    diffs.append(f"replication factor {rf} (plan {t.replication_factor})")
                for k, v in sorted(t.configs.items()):
                    have = actual.get(t.name, {}).get(k)
                    if have is not None and have != v:
                        diffs.append(f"{k}={have} (plan {v})")
                outcomes.append(TopicOutcome(t.name, "drift" if diffs else "exists", "; ".join(diffs)))
        return [o for t in plan.topics for o in outcomes if o.name == t.name]
    finally:
        await admin.close()


async def ensure_topics(settings: CommonSettings, names: Iterable[str] | None = None) -> None:
    """Create the deployment's missing topics from the topic plan (jobscore/topics.py: partitions,
    replicas, min.insync.replicas, retention, max.message.bytes). Idempotent; existing topics are left
    as they are, so real clusters may pre-provision (`jobscore topics --strimzi`) instead."""
    plan = plan_topics(settings)
    if names is not None:
        wanted = list(names)
        extra = [
            PlannedTopic("other", n, settings.topic_partitions, settings.topic_replication_factor)
            for n in wanted
            if plan.by_name(n) is None
        ]
        plan = TopicPlan(plan.only(wanted).topics + tuple(extra))
    try:
        await apply_plan(settings, plan, inspect_existing=False)
    except KafkaConnectionError as e:
        # Services call this first, so a security mismatch is reported here, once, with what to set.
        raise KafkaUnreachable(unreachable_message(settings)) from e
