"""Worker benches on the embedded stack: ``jobscore bench-lanes`` (online latency alone vs with a saturating bulk
backfill, bench/lanes_bench.py) and ``jobscore bench-score-cache`` (items/s with the score cache off vs on for
a workload with repeats, bench/score_cache_bench.py).

Loaded by `app.cli` through its plugin hook (`register(sub, add)`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from app.commands import AddCommand, command_settings
from bench.corpora import CORPUS_CHOICES, CORPUS_HELP
from jobscore.settings import WorkerSettings


def _run_worker_bench(ns: argparse.Namespace, run: Callable[[Any, WorkerSettings], dict[str, Any]]) -> int:
    """Both benches: worker settings from flags/env, quiet engine logs, the embedded stack unless a broker is
    given; the result printed as JSON (and written to --json)."""
    s = command_settings(ns, WorkerSettings, quiet=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    ns.kafka_bootstrap = getattr(ns, "s_kafka_bootstrap", None) or os.environ.get("JOBSCORE_KAFKA_BOOTSTRAP")
    r = run(ns, s)
    print(json.dumps(r, indent=2))
    if ns.json:
        with open(ns.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


def cmd_bench_lanes(ns: argparse.Namespace) -> int:
    from bench.lanes_bench import run

    return _run_worker_bench(ns, run)


def cmd_bench_score_cache(ns: argparse.Namespace) -> int:
    from bench.score_cache_bench import run

    return _run_worker_bench(ns, run)


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:  # type: ignore[type-arg]
    p = add(
        "bench-lanes",
        cmd_bench_lanes,
        "Online request latency (p50/p99, client-measured) at a fixed rate, alone and with the bulk lane "
        "saturated by a backfill; prints bulk pairs/s during the second phase. Embedded stack unless "
        "--kafka-bootstrap/JOBSCORE_KAFKA_BOOTSTRAP is given.",
        WorkerSettings,
    )
    p.add_argument("--rate", type=float, default=2.0, help="Online requests per second (open loop).")
    p.add_argument("--seconds", type=float, default=30.0, help="Length of each phase.")
    p.add_argument(
        "--warmup-s", type=float, default=10.0, help="Online load at --rate before the phases, not measured."
    )
    p.add_argument("--candidates", type=int, default=20, help="Candidates per online request.")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--bulk-requests", type=int, default=400, help="Bulk requests queued before phase 2.")
    p.add_argument("--bulk-candidates", type=int, default=50, help="Candidates per bulk request.")
    p.add_argument("--corpus", choices=CORPUS_CHOICES, default="generated", help=CORPUS_HELP)
    p.add_argument(
        "--runs", type=int, default=1, help="Independent runs (each a fresh stack and worker); median and spread."
    )
    p.add_argument("--json", default=None, help="Also write the result here.")

    p = add(
        "bench-score-cache",
        cmd_bench_score_cache,
        "Pairs/s with the score cache off and on, side by side in one run, for a request stream in which "
        "--distinct requests repeat to make --requests (the repeat share is 1 - distinct/requests). Prints each "
        "phase's pairs/s, engine pairs and hit rate, and the speedup. Embedded stack unless "
        "--kafka-bootstrap/JOBSCORE_KAFKA_BOOTSTRAP is given.",
        WorkerSettings,
    )
    p.add_argument("--requests", type=int, default=200, help="Requests in the stream.")
    p.add_argument("--distinct", type=int, default=100, help="Distinct requests among them (the rest repeat).")
    p.add_argument("--wave", type=int, default=50, help="Requests sent at once; each wave answered before the next.")
    p.add_argument("--candidates", type=int, default=20, help="Candidates per request.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus", choices=CORPUS_CHOICES, default="generated", help=CORPUS_HELP)
    p.add_argument("--json", default=None, help="Also write the result here.")
