"""Knowing postings are scorable: `wait_summarized` reads the summaries topic (``job_summarized.v1``, one per
posting summarized, compacted by job id) until every posting given has its event.

A request sent before a candidate's event answers that candidate ``missing_summary``; wait here first, or
retry those candidates after their event (docs/publishing.md "Knowing postings are scorable").
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from client.config import ConfigSource, as_config
from client.kafka import TopicReader
from schemas import SUMMARIES, JobPosted, JobSummarized, SchemaError
from schemas.summary import content_hash


class NotSummarized(TimeoutError):
    """Some postings have no summary event within the wait; ``missing`` names them (wait again, or check the
    summarizer's lag and dead letters: `jobscore status`, `jobscore dlq ls --stage summarizer`)."""

    def __init__(self, missing: list[str], timeout: float) -> None:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        super().__init__(f"{len(missing)} postings not summarized within {timeout:g}s: {shown}")
        self.missing = missing


async def wait_summarized(
    source: ConfigSource, postings: Iterable[JobPosted | str], timeout: float
) -> dict[str, JobSummarized]:
    """Wait until each posting is scorable; its latest event per job id. A `JobPosted` must be summarized in
    the version given (its content hash), a bare job id in any version; a posting withdrawn since counts as
    done (``deleted`` in its event). Reads from the topic's beginning with no consumer group (commits nothing);
    raises `NotSummarized` after ``timeout`` seconds."""
    config = as_config(source)
    want: dict[str, str | None] = {}  # job id → the content hash to wait for (None: any)
    for p in postings:
        if isinstance(p, JobPosted):
            want[p.job_id] = content_hash(p)
        else:
            want[p] = None
    found: dict[str, JobSummarized] = {}

    def satisfied(job_id: str) -> bool:
        e = found.get(job_id)
        return e is not None and (e.deleted or want[job_id] is None or e.content_hash == want[job_id])

    deadline = time.monotonic() + timeout
    async with TopicReader(config, "summaries") as reader:
        await reader.follow([config.topics.summaries], from_beginning=True, wait_s=max(0.0, timeout))
        while not all(satisfied(j) for j in want):
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotSummarized(sorted(j for j in want if not satisfied(j)), timeout)
            batch = await reader.consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000) + 1)
            for records in batch.values():
                for rec in records:
                    try:
                        event = SUMMARIES.decode(rec.value)
                    except SchemaError:
                        continue  # a newer event version: not ours to read
                    if event.job_id in want:
                        found[event.job_id] = event  # the latest per job wins, as compaction keeps it
    return {j: found[j] for j in want}
