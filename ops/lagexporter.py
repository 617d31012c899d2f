"""`jobscore lag-exporter`: consumer-group lag read from the broker, as Prometheus metrics.

The services report their own lag (``jobscore_consumer_lag``), which vanishes exactly when it matters: with
every worker down nothing reports, and the autoscaler and the lag alert see nothing. The exporter asks the
broker instead — committed offsets (OffsetFetch) against each partition's true end (client/kafka.py
`TopicReader`) — every ``interval_s``, the same reading as `jobscore status`, whether or not a consumer runs:

- ``jobscore_group_lag_records{group,topic,partition}``: records behind the partition's end;
- ``jobscore_group_lag_pairs{group,topic}``: for the request lanes, pending query-candidate pairs (the pending
  requests read and their candidates counted, up to ``pair_scan`` per partition, estimated beyond);
- ``jobscore_lag_exporter_last_success_timestamp_seconds``: when a reading last succeeded (alert on its age).

Its /readyz is ready while the last reading succeeded (check ``broker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence

from jobscore import metrics
from jobscore.health import HEALTH
from jobscore.kafka import topic_reader
from jobscore.settings import CommonSettings
from ops.status import GroupSpec, group_status

log = logging.getLogger(__name__)


async def export_once(settings: CommonSettings, groups: Sequence[GroupSpec], pair_scan: int = 200) -> None:
    """One reading of every group's lag into the gauges (raises what the broker raised)."""
    async with topic_reader(settings, "lag-exporter") as reader:
        for spec in groups:
            st = await group_status(reader, spec, pair_scan)
            pairs: Counter[str] = Counter()
            for p in st.partitions:
                metrics.GROUP_LAG_RECORDS.labels(st.group, p.topic, str(p.partition)).set(p.lag)
                if p.pairs is not None:
                    pairs[p.topic] += p.pairs
            for topic in spec.request_lanes:
                metrics.GROUP_LAG_PAIRS.labels(st.group, topic).set(pairs[topic])
    metrics.LAG_EXPORTER_LAST_SUCCESS.set_to_current_time()


async def run_exporter(
    settings: CommonSettings, groups: Sequence[GroupSpec], interval_s: float, stop: asyncio.Event, pair_scan: int = 200
) -> None:
    """Read the lag every ``interval_s`` until ``stop``; a failed reading is logged, marks /readyz not ready
    (``broker``) and leaves the last values in place (their timestamp tells their age)."""
    HEALTH.reset()
    while not stop.is_set():
        HEALTH.beat()
        try:
            await export_once(settings, groups, pair_scan)
            HEALTH.set("broker", True)
        except Exception as e:  # the exporter outlives any one failed reading
            HEALTH.set("broker", False, f"lag reading failed: {e!r}")
            log.warning("lag reading failed; next try in one interval", extra={"error": repr(e)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
