"""Summarizer subcommands, loaded by `app.cli` through its plugin hook (`register(sub, add)`).

- ``jobscore summarize-backfill FILE``: summarize an existing corpus straight into Redis (resumable).
- ``jobscore bench-summarizer``: the mode trade-off measurement (writes bench/results/summarizer.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from app.commands import AddCommand, command_settings, run_until_signal
from jobscore.settings import SummarizerSettings


def cmd_backfill(ns: argparse.Namespace) -> int:
    from summarizer.backfill import backfill

    s = command_settings(ns, SummarizerSettings)
    source = Path(ns.file)
    if not source.exists():
        print(f"{source}: no such file", file=sys.stderr)
        return 2

    async def main(stop: asyncio.Event) -> int:
        rep = await backfill(
            s,
            source,
            batch_size=ns.batch_size,
            checkpoint=Path(ns.checkpoint) if ns.checkpoint else None,
            stop=stop,
            progress=not ns.no_progress,
        )
        print(
            f"rows {rep.rows} (resumed after {rep.resumed_from}): written {rep.written}, unchanged "
            f"{rep.unchanged}, deleted {rep.deleted}, invalid {rep.invalid}, failed {rep.failed}"
            + (" — interrupted; rerun to resume" if rep.interrupted else ""),
            file=sys.stderr,
        )
        for e in rep.errors:
            print(f"  {e}", file=sys.stderr)
        return 130 if rep.interrupted else (1 if rep.failed else 0)

    return run_until_signal(main)


def cmd_bench(ns: argparse.Namespace) -> int:
    from bench.summarizer_bench import main

    argv = ["--n-postings", str(ns.n_postings), "--out", ns.out]
    if ns.modes:
        argv += ["--modes", *ns.modes]
    if ns.skip_vllm_scorer:
        argv += ["--skip-vllm-scorer"]
    return main(argv)


def register(sub: Any, add: AddCommand) -> None:
    p = add(
        "summarize-backfill",
        cmd_backfill,
        "Summarize an existing corpus (JSONL of JobPosted rows; Parquet needs pyarrow) straight into the "
        "Redis summary cache. Resumable through a checkpoint file; Ctrl-C finishes the batch in flight.",
        SummarizerSettings,
    )
    p.add_argument("file", help="JSONL (or .parquet) file of postings")
    p.add_argument("--batch-size", type=int, default=64, help="rows per summarize + Redis write (default 64)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default FILE.checkpoint.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add(
        "bench-summarizer",
        cmd_bench,
        "Measure the summarizer modes: compression, cost and scoring quality on compressed vs raw text.",
        SummarizerSettings,
    )
    p.add_argument("--n-postings", type=int, default=40, help="postings per mode for compression and cost")
    p.add_argument("--modes", nargs="*", default=None, help="modes to measure (default: all three)")
    p.add_argument("--skip-vllm-scorer", action="store_true", help="only the MiniLM bi-encoder scorer")
    p.add_argument("--out", default="bench/results/summarizer.md", help="where to write the table")
