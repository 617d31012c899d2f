"""``jobscore status``: lag, members, throughput, dead letters, versions and cache size in one look.

Registered by `app.cli` through its plugin hook (`register(sub, add)`); the data comes from
`ops.status` (broker and Redis only — no service is asked, so it works while they are down).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from app.commands import AddCommand, command_settings, run_until_signal, serve_health
from jobscore.settings import CommonSettings


def cmd_status(ns: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from ops.status import collect_status, default_groups, render_text, watch

    s = command_settings(ns, CommonSettings)
    groups = default_groups(s, ns.worker_group, ns.summarizer_group)
    kw: dict[str, Any] = {
        "window_s": ns.window,
        "recent": ns.recent,
        "pair_scan": ns.pair_scan,
        "max_cache_keys": ns.max_cache_keys,
    }

    def show(st: Any) -> None:
        if ns.json:
            sys.stdout.write(json.dumps(st.to_dict()) + "\n")
        else:
            if ns.watch:
                sys.stdout.write("\x1b[2J\x1b[H")  # clear the terminal: a live view, not a scroll
            sys.stdout.write(render_text(st) + "\n")
        sys.stdout.flush()

    async def main(stop: asyncio.Event) -> int:
        try:
            if ns.watch:
                async for st in watch(s, groups, ns.watch, stop, **kw):
                    show(st)
            else:
                show(await collect_status(s, groups, **kw))
        except (KafkaError, LookupError, OSError) as e:
            print(
                f"status: {e!r}. Is the broker at {s.kafka_bootstrap} and Redis reachable, and do the "
                "topic_* settings name this deployment's topics?",
                file=sys.stderr,
            )
            return 1
        return 0

    return run_until_signal(main)


def _group_flags(p: argparse.ArgumentParser) -> None:
    """The consumer groups read, for `status` and `lag-exporter` alike (ops.status.default_groups)."""
    p.add_argument("--worker-group", default=None, help="Workers' consumer group (default: jobscore-worker).")
    p.add_argument(
        "--summarizer-group", default=None, help="Summarizers' consumer group (default: jobscore-summarizer)."
    )


def register(sub: Any, add: AddCommand) -> None:
    p = add(
        "status",
        cmd_status,
        "One look at a deployment: per consumer group and partition the committed and end offsets and the lag "
        "(records; for request lanes also query-candidate pairs), members and their assignment, rankings/s and "
        "dead letters/s over the last window, dead letters by stage and error type, model and summarizer "
        "versions in recent rankings, summary cache entries per version.",
        CommonSettings,
    )
    _group_flags(p)
    p.add_argument("--json", action="store_true", help="One JSON object per look (for scripts).")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
    p.add_argument("--window", type=float, default=60.0, help="Seconds the rates are computed over (default 60).")
    p.add_argument(
        "--recent",
        type=int,
        default=1000,
        help="Latest records read per partition of the results and dead-letter topics (default 1000).",
    )
    p.add_argument(
        "--pair-scan",
        type=int,
        default=10_000,
        help="Pending requests read per partition to count candidate pairs; beyond it the count is "
        "extrapolated and marked ~ (default 10000).",
    )
    p.add_argument("--max-cache-keys", type=int, default=1_000_000, help="Stop counting cache keys after this many.")

    p = add(
        "lag-exporter",
        cmd_lag_exporter,
        "Export consumer-group lag read from the broker (committed vs end offsets; for request lanes also pending "
        "query-candidate pairs) as Prometheus metrics on --port, whether or not any worker or summarizer runs: "
        "what the autoscaler and the lag alerts should read (ops/lagexporter.py).",
        CommonSettings,
    )
    p.add_argument("--port", type=int, default=9102, help="Port of /metrics, /healthz, /readyz (default 9102).")
    p.add_argument("--interval", type=float, default=15.0, help="Seconds between readings (default 15).")
    _group_flags(p)
    p.add_argument(
        "--pair-scan", type=int, default=200, help="Pending requests read per partition to count pairs (default 200)."
    )


def cmd_lag_exporter(ns: argparse.Namespace) -> int:
    from ops.lagexporter import run_exporter
    from ops.status import default_groups

    s = command_settings(ns, CommonSettings)
    if not serve_health(ns.port):
        return 2
    groups = default_groups(s, ns.worker_group, ns.summarizer_group)

    async def main(stop: asyncio.Event) -> int:
        await run_exporter(s, groups, ns.interval, stop, ns.pair_scan)
        return 0

    return run_until_signal(main)
