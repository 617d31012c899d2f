"""Prometheus metrics with fixed names. Exposed on ``metrics_port`` when it is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
LAST_LOOP = Gauge("jobscore_worker_last_iteration_timestamp", "Unix time the loop last iterated (liveness).")


def serve(port: int) -> None:
    """/metrics (and /healthz, /readyz) on ``port``; 0 disables it."""
    from jobscore import health

    health.serve(port)


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
