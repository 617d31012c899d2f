"""``jobscore score-backfill``: score a file of (query, job ids) into a results file, resumable.

Loaded by `app.cli` through its plugin hook (`register(sub, add)`). The core (units, journal, output,
the cluster path over the bulk lane) is ops/backfill.py; the ``--direct`` path lives here because it
loads the engine and reuses the worker's prompt and candidate resolution in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from app.commands import AddCommand, command_settings, run_until_signal
from jobscore.settings import WorkerSettings


async def direct_units(settings: WorkerSettings, engine: Any, units: list[Any]) -> AsyncIterator[Any]:
    """Score units in this process through ``engine`` with the worker's own prompt building, summary
    lookup and ranking (`Worker.rank_now`, no broker): for a machine without a cluster."""
    from ops.backfill import JournalLine, chunks, rows_of
    from schemas import ScoreRequest
    from worker.loop import Worker

    worker = Worker(settings, engine)  # not started: only its prompt/cache/engine path is used
    try:
        for group in chunks(units, max(1, settings.max_batch_items // 64)):
            requests = [
                ScoreRequest(request_id=f"direct-{u.index}", query=u.query, candidates=u.job_ids, top_k=len(u.job_ids))
                for u in group
            ]
            for u, ranking in zip(group, await worker.rank_now(requests), strict=True):
                yield JournalLine(u.index, rows_of(u, ranking))
    finally:
        await worker.cache.close()


def cmd_score_backfill(ns: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ops.backfill import BackfillError, cluster_units, run_backfill

    s = command_settings(ns, WorkerSettings)
    src, out = Path(ns.input), Path(ns.out)
    if not src.exists():
        print(f"error: {src} does not exist", file=sys.stderr)
        return 2
    if out.suffix not in (".parquet", ".jsonl"):
        print(f"error: --out must end in .parquet or .jsonl, got {out}", file=sys.stderr)
        return 2
    run_id = hashlib.sha1(f"{src.resolve()}:{src.stat().st_size}:{ns.chunk}".encode()).hexdigest()[:10]
    engine = None
    if ns.direct:
        from engine.factory import engine_from_settings

        engine = engine_from_settings(s)
    bar = tqdm(unit="pair", dynamic_ncols=True, disable=ns.no_progress)

    def on_start(total: int, done: int) -> None:
        bar.reset(total=total)
        bar.update(done)

    async def main(stop: asyncio.Event) -> int:
        def scorer(units: list[Any]) -> AsyncIterator[Any]:
            if engine is not None:
                return direct_units(s, engine, units)
            return cluster_units(s, run_id, units, ns.max_in_flight, ns.timeout)

        job = asyncio.create_task(run_backfill(src, out, scorer, ns.chunk, bar.update, on_start))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            job.cancel()
            print("\ninterrupted: finished units are journaled; run the same command again to resume", file=sys.stderr)
            return 130
        stopper.cancel()
        try:
            rep = job.result()
        except BackfillError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        bar.close()
        print(rep.render())
        print(f"wrote {out}")
        return 0

    try:
        return run_until_signal(main)
    finally:
        bar.close()
        if engine is not None:
            engine.close()


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:  # type: ignore[type-arg]
    p = add(
        "score-backfill",
        cmd_score_backfill,
        "Score a file of queries × job ids (JSONL/Parquet rows: query, job_ids or job_id, optional query_id) "
        "into --out (.parquet or .jsonl: one row per pair with query_id, job_id, score, error, model id/revision, "
        "summarizer version). Publishes to the bulk lane (workers serve online traffic first) with bounded "
        "work in flight, or scores in-process with --direct. Finished units are journaled next to --out: a "
        "killed run resumes where it stopped, without duplicate or missing rows.",
        WorkerSettings,
    )
    p.add_argument("input", help="pairs.jsonl or pairs.parquet")
    p.add_argument("--out", required=True, help="results.parquet or results.jsonl")
    p.add_argument("--direct", action="store_true", help="Score in this process (engine + Redis; no broker).")
    p.add_argument("--chunk", type=int, default=100, help="Job ids per request (one journaled unit).")
    p.add_argument("--max-in-flight", type=int, default=16, help="Requests outstanding at once (cluster mode).")
    p.add_argument("--timeout", type=float, default=300.0, help="Seconds to wait for a ranking before re-sending.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar (logs only).")
