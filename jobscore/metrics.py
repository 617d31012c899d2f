"""Prometheus metrics with fixed names. Exposed on ``metrics_port`` when it is set.

README.md "Metrics" lists every series (name, type, labels, meaning); tests/test_metrics.py scrapes a
real worker and summarizer and checks each documented series is there, and tests/test_dashboards.py
checks the Grafana dashboard and the alert rules query only series defined here.
"""

from __future__ import annotations

import time
from collections import deque

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import IllegalStateError
from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DEAD_LETTERS = Counter("jobscore_dead_letters_total", "Messages sent to the dead-letter topic.", ["stage", "kind"])

# summarizer
POSTINGS_PROCESSED = Counter("jobscore_summarizer_postings_total", "Postings handled.", ["outcome"])
SUMMARY_COMPRESSION = Histogram(
    "jobscore_summarizer_compression_ratio", "Raw tokens / summary tokens.", buckets=(1, 1.5, 2, 3, 5, 8, 10, 15, 25)
)
CACHE_WRITES = Counter("jobscore_summarizer_cache_writes_total", "Summary cache writes.", ["op"])

# worker
REQUESTS = Counter("jobscore_worker_requests_total", "Scoring requests answered.", ["status"])
ITEMS_SCORED = Counter("jobscore_worker_items_scored_total", "Query-candidate pairs scored.")
MISSING_SUMMARY = Counter(
    "jobscore_worker_missing_summary_total", "Candidates without a summary, by what the worker did.", ["action"]
)
CANDIDATE_ERRORS = Counter("jobscore_worker_candidate_errors_total", "Candidates not scored.", ["reason"])
BATCH_SIZE = Histogram(
    "jobscore_worker_batch_size", "Pairs per engine batch.", buckets=(1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096)
)
ENGINE_SECONDS = Histogram("jobscore_worker_engine_seconds", "Engine time per batch.", buckets=LATENCY_BUCKETS)
REQUEST_LATENCY = Histogram(
    "jobscore_worker_request_latency_seconds", "Request created → ranking published.", buckets=LATENCY_BUCKETS
)
BATCH_TOKENS = Histogram(
    "jobscore_worker_batch_tokens",
    "Prompt tokens per engine batch (before prefix-cache hits).",
    buckets=(256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
)
ENGINE_BUSY = Counter(
    "jobscore_worker_engine_busy_seconds_total", "Seconds the engine spent scoring; rate() = utilisation."
)
QUEUE_DEPTH = Gauge("jobscore_worker_queue_items", "Query-candidate pairs queued for the engine.")
PAUSED = Gauge("jobscore_worker_paused", "1 while partitions are paused for backpressure.")
# Priority lanes (online requests topic, bulk requests topic): queue, scored pairs and pauses per lane.
LANE_QUEUE = Gauge("jobscore_worker_lane_queue_items", "Pairs queued for the engine, by lane.", ["lane"])
LANE_ITEMS = Counter("jobscore_worker_lane_items_scored_total", "Pairs scored, by lane.", ["lane"])
LANE_PAUSED = Gauge("jobscore_worker_lane_paused", "1 while a lane's partitions are paused.", ["lane"])
# The score cache (worker/scorecache.py): lookups by result (hit, miss, error = Redis did not answer) and writes.
SCORE_CACHE = Counter("jobscore_worker_score_cache_total", "Score cache lookups, per pair.", ["result"])
SCORE_CACHE_WRITES = Counter(
    "jobscore_worker_score_cache_writes_total", "Scores written to the score cache, per pair.", ["outcome"]
)
LAST_LOOP = Gauge("jobscore_worker_last_iteration_timestamp", "Unix time the loop last iterated (liveness).")


def serve(port: int) -> None:
    """/metrics (and /healthz, /readyz) on ``port``; 0 disables it."""
    from jobscore import health

    health.serve(port)


# --- ops questions (issue 17): what runs, how far behind, what fails, how busy -----------------------

BUILD = Info(
    "jobscore_build",
    "What this process runs: service, model id/revision, adapter version, summarizer version/mode, engine, dtype.",
)
CONSUMER_LAG = Gauge(
    "jobscore_consumer_lag",
    "Records behind the partition's end, from the consumer's own view (last fetched highwater - position).",
    ["group", "topic", "partition"],
)
KAFKA_ERRORS = Counter("jobscore_kafka_errors_total", "Kafka client errors, by operation.", ["op"])
# Read from the broker by `jobscore lag-exporter` (ops/lagexporter.py), whether or not any consumer runs.
GROUP_LAG_RECORDS = Gauge(
    "jobscore_group_lag_records",
    "Records a consumer group is behind each partition's end, read from the broker (committed vs end offset).",
    ["group", "topic", "partition"],
)
GROUP_LAG_PAIRS = Gauge(
    "jobscore_group_lag_pairs",
    "Query-candidate pairs pending for a consumer group on a request lane, read from the broker.",
    ["group", "topic"],
)
LAG_EXPORTER_LAST_SUCCESS = Gauge(
    "jobscore_lag_exporter_last_success_timestamp_seconds", "When the lag exporter last read the broker's offsets."
)
# Answers meant for a request's reply_topic published on the rankings topic instead, by why: the reply topic
# does not exist ("missing") or could not be written after every try ("send_failed").
REPLY_FALLBACK = Counter(
    "jobscore_worker_reply_topic_fallback_total",
    "Rankings published on the rankings topic instead of the request's reply_topic.",
    ["reason"],
)
ENGINE_BUSY_RATIO = Gauge(
    "jobscore_worker_engine_busy_ratio",
    "Share of the last minute the engine spent scoring (0-1); >= 0.95 for long means scale out.",
)

BUILD_FIELDS = ("service", "model_id", "model_revision", "adapter_version", "summarizer_version", "engine", "dtype")


def set_build(service: str, **fields: str) -> None:
    """Fill ``jobscore_build_info``; fields a service does not have are exported empty (stable label set)."""
    unknown = set(fields) - set(BUILD_FIELDS)
    assert not unknown, f"unknown build fields {unknown}: add them to BUILD_FIELDS (and README)"
    BUILD.info({k: str(fields.get(k, "")) for k in BUILD_FIELDS} | {"service": service})


_lag_labels: dict[str, set[tuple[str, str, str]]] = {}


async def observe_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    """Set ``jobscore_consumer_lag`` for every assigned partition whose end this consumer has seen.

    The highwater is the one the last fetch response carried (no extra request); partitions no longer
    assigned are removed so a revoked partition does not report a frozen lag. On the embedded broker the
    highwater can be low after batched produces (a tansu quirk): the lag is then clipped at 0.
    """
    seen: set[tuple[str, str, str]] = set()
    for tp in consumer.assignment():
        hw = consumer.highwater(tp)
        if hw is None:
            continue
        try:
            pos = await consumer.position(tp)
        except IllegalStateError:  # revoked while we looked: the next call sees the new assignment
            continue
        labels = (group, tp.topic, str(tp.partition))
        CONSUMER_LAG.labels(*labels).set(max(0, hw - pos))
        seen.add(labels)
    for gone in _lag_labels.get(group, set()) - seen:
        CONSUMER_LAG.remove(*gone)
    _lag_labels[group] = seen


class BusyClock:
    """Seconds during which at least one of several overlapping calls was open — the union of their intervals,
    counted as it goes. Adding up each call's own duration would count twice the time two calls share (the
    worker keeps several batches in the engine at once), so "busy / elapsed" could exceed 1."""

    def __init__(self) -> None:
        self.open = 0
        self.mark = 0.0
        self.total = 0.0

    def _tick(self, now: float) -> float:
        added = now - self.mark if self.open else 0.0
        self.mark = now
        self.total += added
        return added

    def enter(self, now: float) -> float:
        """A call opens at ``now``; returns the busy seconds added since the last event."""
        added = self._tick(now)
        self.open += 1
        return added

    def leave(self, now: float) -> float:
        """A call closes at ``now``; returns the busy seconds added since the last event."""
        added = self._tick(now)
        self.open -= 1
        return added


class _BusyWindow:
    """Engine busy seconds per wall second over the last ``window_s``, computed when scraped.

    Samples the busy counter at each call and compares with the oldest sample inside the window, so the
    gauge needs no timer of its own (rate() over the counter is the same figure for Prometheus).
    """

    def __init__(self, counter: Counter, window_s: float = 60.0) -> None:
        self.counter = counter
        self.window_s = window_s
        self.samples: deque[tuple[float, float]] = deque([(time.monotonic(), 0.0)])

    def busy(self) -> float:
        return float(self.counter._value.get())  # the client has no public read of one unlabelled counter

    def __call__(self) -> float:
        now, busy = time.monotonic(), self.busy()
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window_s:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        self.samples.append((now, busy))
        return 0.0 if now <= t0 else min(1.0, max(0.0, (busy - b0) / (now - t0)))


ENGINE_BUSY_RATIO.set_function(_BusyWindow(ENGINE_BUSY))


# summarizer modes (issue 5)
SUMMARIZE_SECONDS = Histogram(
    "jobscore_summarizer_batch_seconds", "Time to summarize one chunk of postings.", ["mode"], buckets=LATENCY_BUCKETS
)
SUMMARIZE_FAILURES = Counter(
    "jobscore_summarizer_failures_total", "Postings the summarizer could not summarize (dead-lettered).", ["mode"]
)
SUMMARY_TOKENS = Histogram(
    "jobscore_summarizer_summary_tokens",
    "Estimated tokens per written summary.",
    ["mode"],
    buckets=(16, 32, 64, 96, 128, 192, 256, 512, 1024),
)

# faults and recovery (issue 18)
REDIS_ERRORS = Counter(
    "jobscore_redis_errors_total", "Failed Redis tries (each retry counts), by cache operation.", ["op"]
)
