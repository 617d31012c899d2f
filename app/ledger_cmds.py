"""``jobscore ledger``: after an incident, did every request get an answer? (ops/ledger.py)"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from app.commands import AddCommand, command_settings, run_until_signal
from jobscore.settings import CommonSettings, SummarizerSettings

HELP = (
    "After an incident: read the requests, rankings and dead-letter topics and balance them — requests sent, "
    "answered (distinct request ids with a ranking), dead-lettered, unanswered (lost unless a worker still has "
    "them) and duplicate rankings (replays) — and list the unanswered request ids. --postings balances postings "
    "against the summaries in Redis instead. Select with --since/--until (ISO time or time ago) and/or "
    "--run-id-prefix. Exit code 1 when anything is unanswered (or, with --postings, missing)."
)
EPILOG = """\
examples:
  jobscore ledger --since 2h                       # the last two hours of requests
  jobscore ledger --since 2026-11-26T07:00:00Z --until 2026-11-26T08:00:00Z
  jobscore ledger --run-id-prefix loadtest-42- --json > ledger.json
  jobscore ledger --postings --summarizer-version extractive-v1

Run it once the system is quiet (or with --until a little in the past): requests still being worked
on count as unanswered until their ranking is published. Requests that named their own reply_topic
are answered there; the ledger reads the deployment's rankings topic only.
"""


def cmd_ledger(ns: argparse.Namespace) -> int:
    from ops.ledger import Window, postings_ledger, request_ledger
    from ops.times import parse_time

    s = command_settings(ns, CommonSettings, quiet=True)
    try:
        window = Window(
            since=parse_time(ns.since) if ns.since else None,
            until=parse_time(ns.until) if ns.until else None,
            id_prefix=ns.run_id_prefix,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> int:
        led: Any
        if ns.postings:
            led = await postings_ledger(s, window, ns.summarizer_version, idle_s=ns.idle_s, timeout_s=ns.timeout_s)
        else:
            led = await request_ledger(s, window, idle_s=ns.idle_s, timeout_s=ns.timeout_s)
        if ns.json:
            print(json.dumps(led.to_dict(), indent=2))
        else:
            print(led.render(list_limit=ns.list_limit))
        if any(not r.complete for r in led.reads):
            print(
                f"warning: a topic was not read to its end within --timeout-s {ns.timeout_s}; figures are partial",
                file=sys.stderr,
            )
        return 1 if led.lost else 0

    return run_until_signal(main)


def register(sub: Any, add: AddCommand) -> None:
    p = add("ledger", cmd_ledger, HELP, CommonSettings)
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "--since",
        default=None,
        help="Count requests produced at or after this: a time ago (2h), a unix time (@1764140400) or ISO 8601 "
        "(no zone = UTC).",
    )
    p.add_argument("--until", default=None, help="Count requests produced at or before this: ISO time or time ago.")
    p.add_argument(
        "--run-id-prefix",
        default=None,
        help="Count only requests whose id starts with this (a load test's or client's run id).",
    )
    p.add_argument("--json", action="store_true", help="Print the ledger as JSON (all unanswered ids), for scripts.")
    p.add_argument("--list-limit", type=int, default=50, help="Unanswered ids printed in the text form.")
    p.add_argument(
        "--postings",
        action="store_true",
        help="Balance postings (latest per job id) against summaries in Redis for --summarizer-version instead.",
    )
    p.add_argument(
        "--summarizer-version",
        default=os.environ.get(
            "JOBSCORE_SUMMARIZER_VERSION", SummarizerSettings.model_fields["summarizer_version"].default
        ),
        help="With --postings: the summary cache version to check [env JOBSCORE_SUMMARIZER_VERSION].",
    )
    p.add_argument(
        "--idle-s",
        type=float,
        default=1.0,
        help="After a partition's end offset, read on until it has been idle this long (the embedded broker "
        "under-reports end offsets after batched produces).",
    )
    p.add_argument("--timeout-s", type=float, default=300.0, help="Give up reading a topic after this long.")
