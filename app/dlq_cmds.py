"""``jobscore dlq ls|show|redrive``: read the dead-letter topic and re-drive originals after a fix.

Registered by `app.cli` through its plugin hook (`register(sub, add)`); the library is `ops.dlq`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from app.commands import AddCommand, command_settings, run_until_signal
from jobscore.settings import CommonSettings


def _filter(ns: argparse.Namespace) -> Any:
    from ops.dlq import DeadLetterFilter
    from ops.times import parse_time

    return DeadLetterFilter(
        stage=ns.stage,
        error_type=ns.error_type,
        since=parse_time(ns.since) if ns.since else None,
        until=parse_time(ns.until) if ns.until else None,
        request_id=ns.request_id,
        job_id=ns.job_id,
        source_topic=ns.source_topic,
    )


def _run(ns: argparse.Namespace, body: Any) -> int:
    from aiokafka.errors import KafkaError

    s = command_settings(ns, CommonSettings)
    try:
        flt = _filter(ns) if hasattr(ns, "stage") else None
    except ValueError as e:
        print(f"dlq: {e}", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> int:
        try:
            return int(await body(s, flt))
        except LookupError as e:
            print(f"dlq: {e}", file=sys.stderr)
            return 1
        except (KafkaError, OSError) as e:
            print(f"dlq: {e!r}. Is the broker at {s.kafka_bootstrap} reachable?", file=sys.stderr)
            return 1

    return run_until_signal(main)


def cmd_ls(ns: argparse.Namespace) -> int:
    from ops.dlq import read_entries

    async def body(s: CommonSettings, flt: Any) -> int:
        n = 0
        async for e in read_entries(s, flt, limit=ns.limit):
            row = e.summary()
            if ns.json:
                sys.stdout.write(json.dumps(row) + "\n")
            else:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["failed_at"]))
                reason = row["reason"] if len(row["reason"]) <= 100 else row["reason"][:97] + "..."
                sys.stdout.write(
                    f"{row['partition']}:{row['offset']:<6} {when}  {row['stage']:<10} {row['error_type']:<16} "
                    f"{row['source']:<32} {row['id']:<24} {reason}\n"
                )
            n += 1
        print(f"{n} dead letters", file=sys.stderr)
        return 0

    return _run(ns, body)


def cmd_show(ns: argparse.Namespace) -> int:
    from ops.dlq import get_entry

    async def body(s: CommonSettings, flt: Any) -> int:
        part, _, off = ns.position.partition(":")
        try:
            e = await get_entry(s, int(part), int(off))
        except ValueError:
            print(f"dlq show: {ns.position!r}: give PARTITION:OFFSET as `dlq ls` prints them", file=sys.stderr)
            return 2
        sys.stdout.write(json.dumps(e.full(), indent=2, ensure_ascii=False) + "\n")
        return 0

    return _run(ns, body)


def cmd_redrive(ns: argparse.Namespace) -> int:
    from ops.dlq import redrive

    async def body(s: CommonSettings, flt: Any) -> int:
        if not (ns.all or flt.stage or flt.error_type or flt.request_id or flt.job_id or flt.since):
            print("dlq redrive: narrow it down (--error-type, --stage, --since, ids) or say --all", file=sys.stderr)
            return 2
        rep = await redrive(s, flt, max_attempts=ns.max_attempts, dry_run=ns.dry_run, limit=ns.limit)
        verb = "would re-drive" if rep.dry_run else "re-drove"
        for r in rep.sent:
            row = r.entry.summary()
            print(f"{verb} {row['partition']}:{row['offset']} → {r.topic} attempt {r.attempt} ({row['id']})")
        for e in rep.over_cap:
            row = e.summary()
            print(
                f"skipped {row['partition']}:{row['offset']}: already re-driven {ns.max_attempts} times ({row['id']})"
            )
        for e, why in rep.not_redrivable:
            print(f"skipped {e.partition}:{e.offset}: {why}")
        print(
            f"{verb} {len(rep.sent)}; over the attempt cap {len(rep.over_cap)}; duplicate copies "
            f"{len(rep.duplicates)}; not re-drivable {len(rep.not_redrivable)}",
            file=sys.stderr,
        )
        return 0

    return _run(ns, body)


def _filter_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (all given must match)")
    g.add_argument("--stage", choices=["worker", "summarizer"], help="Which stage dead-lettered it.")
    g.add_argument("--error-type", help="malformed, invalid, unknown_schema, oversized, summarize_failed, …")
    g.add_argument("--since", help="A time ago (15m, -2h, 1d), a unix time (@1764140400) or ISO 8601 (no zone = UTC).")
    g.add_argument("--until", help="Same forms as --since.")
    g.add_argument("--request-id", help="The original request's request_id (or its key).")
    g.add_argument("--job-id", help="The original posting's job_id, or a candidate of the original request.")
    g.add_argument("--source-topic", help="Only dead letters of records from this topic.")
    g.add_argument("--limit", type=int, default=None, help="At most this many.")


def register(sub: Any, add: AddCommand) -> None:
    p = add(
        "dlq",
        lambda ns: ns.dlq_fn(ns),
        "Dead letters: list them (ls), print one (show), or send originals back to their topic after a fix "
        "(redrive). Settings flags go before the action (jobscore dlq --kafka-bootstrap HOST:9092 ls) or in "
        "JOBSCORE_* variables; `jobscore dlq ACTION --help` lists the action's own flags.",
        CommonSettings,
    )
    dsub = p.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    ls = dsub.add_parser("ls", help="One line per dead letter (PARTITION:OFFSET first), oldest first.")
    ls.set_defaults(dlq_fn=cmd_ls)
    _filter_flags(ls)
    ls.add_argument("--json", action="store_true", help="JSON lines instead of columns.")

    show = dsub.add_parser("show", help="Print one dead letter fully, its original decoded when it is text.")
    show.set_defaults(dlq_fn=cmd_show)
    show.add_argument("position", help="PARTITION:OFFSET of the dead letter, as `dlq ls` prints it.")

    rd = dsub.add_parser(
        "redrive",
        help="Send the matching originals back to their source topic (after fixing the cause). Each gets a "
        "jobscore-redrive-attempt header; records already re-driven --max-attempts times are skipped; a "
        "source record is sent once per run even if it was dead-lettered several times.",
    )
    rd.set_defaults(dlq_fn=cmd_redrive)
    _filter_flags(rd)
    rd.add_argument("--max-attempts", type=int, default=3, help="Re-drives allowed per record (default 3).")
    rd.add_argument("--dry-run", action="store_true", help="Print what would be re-driven; send nothing.")
    rd.add_argument("--all", action="store_true", help="Re-drive every dead letter (no filter).")
