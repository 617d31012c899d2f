"""``jobscore capacity``: workers, partitions, KEDA thresholds and latency for a load (jobscore/capacity.py).

Loaded by `app.cli` through its plugin hook (`register(sub, add)`). Pure arithmetic: contacts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.commands import AddCommand, settings_from
from jobscore.capacity import CapacityPlan
from jobscore.settings import ToolSettings, WorkerSettings, setup_logging


def plans_from_args(ns: argparse.Namespace) -> tuple[CapacityPlan, CapacityPlan]:
    """The plan for the given load and for ``--growth`` x it on the same partitions. The worker's own
    batch limits (its flags' JOBSCORE_* variables) apply unless given here. Raises ValueError."""
    from jobscore.capacity import Knobs, Load, plan

    w = WorkerSettings()
    load = Load(ns.rate, ns.candidates, ns.tokens, ns.items_per_s)
    knobs = Knobs(
        utilisation=ns.utilisation,
        latency_budget_s=ns.latency_budget,
        growth=ns.growth,
        max_batch_tokens=ns.max_batch_tokens or w.max_batch_tokens,
        max_batch_items=ns.max_batch_items or w.max_batch_items,
        max_wait_ms=w.max_wait_ms if ns.max_wait_ms is None else ns.max_wait_ms,
    )
    p = plan(load, knobs, partitions=ns.partitions)
    return p, plan(load.scaled(knobs.growth), knobs, partitions=p.partitions)


def cmd_capacity(ns: argparse.Namespace) -> int:
    from jobscore.capacity import render

    s: ToolSettings = settings_from(ns, ToolSettings)
    setup_logging(s.log_level, s.log_format)
    try:
        p, p10 = plans_from_args(ns)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ns.json:
        print(json.dumps({"plan": p.as_dict(), "growth": p10.as_dict()}, indent=2, default=str))
    else:
        print(render(p, p10))
    return 0 if p.within_budget else 1


def register(sub: argparse._SubParsersAction, add: AddCommand) -> None:  # type: ignore[type-arg]
    p = add(
        "capacity",
        cmd_capacity,
        "Size a deployment: workers, requests-topic partitions, KEDA lag threshold (in pairs) and the latency "
        "to expect at a load, and what growth (default 10x) needs. Exit 1 if the latency budget is not met.",
        ToolSettings,
    )
    p.add_argument("--rate", type=float, required=True, help="Scoring requests per second.")
    p.add_argument("--candidates", type=float, required=True, help="Mean candidates per request.")
    p.add_argument("--tokens", type=int, required=True, help="Prompt tokens per pair (instruction + query + summary).")
    p.add_argument(
        "--items-per-s",
        type=float,
        required=True,
        help="Pairs/s one worker sustains at --tokens, measured (bench/RESULTS.md, `jobscore bench`). "
        "The paper: ~2,000 per GPU; LinkedIn: 2,200 per H100 at ~200 tokens.",
    )
    p.add_argument("--utilisation", type=float, default=0.7, help="Target busy share per worker (0-1).")
    p.add_argument("--latency-budget", type=float, default=0.5, help="p99 request latency budget, seconds.")
    p.add_argument("--growth", type=float, default=10.0, help="Traffic multiple the partitions are provisioned for.")
    p.add_argument("--partitions", type=int, default=None, help="An existing requests topic's partition count.")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="Default: the worker's max_batch_tokens.")
    p.add_argument("--max-batch-items", type=int, default=None, help="Default: the worker's max_batch_items.")
    p.add_argument("--max-wait-ms", type=float, default=None, help="Default: the worker's max_wait_ms.")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
