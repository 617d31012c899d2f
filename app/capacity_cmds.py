"""``jobscore capacity``: workers, partitions, KEDA thresholds and latency for a load (ops/capacity.py).

Loaded by `app.cli` through its plugin hook (`register(sub, add)`). Pure arithmetic: contacts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.commands import AddCommand, command_settings
from engine.factory import DEFAULT_SCORER, SCORER_FULL, SCORER_PRUNED
from jobscore.settings import ToolSettings, WorkerSettings
from ops.capacity import CapacityPlan


def engine_speed(ns: argparse.Namespace) -> tuple[float, int, str]:
    """(items/s, tokens per pair, where they come from): ``--items-per-s`` as given, else the newest measured
    figure for ``--model`` on ``--platform`` (bench/results/throughput.json). Raises ValueError with what to do."""
    from bench.throughput import load, newest

    if ns.items_per_s is not None:
        if ns.tokens is None:
            raise ValueError("--items-per-s needs --tokens: the prompt length that speed was measured at")
        return ns.items_per_s, ns.tokens, "--items-per-s as given"
    m = newest(ns.model, ns.platform)
    if m is None:
        have = ", ".join(sorted({f"{x.model} on {x.platform}" for x in load()})) or "none"
        raise ValueError(
            f"no measured items/s for {ns.model} on {ns.platform} (measured: {have}); measure it (`jobscore bench`, "
            "scripts/gpu-check.sh on a GPU) and record it in bench/results/throughput.json, or pass --items-per-s and "
            "--tokens"
        )
    if ns.tokens is not None and ns.tokens != m.tokens:
        raise ValueError(
            f"the measured figure for {ns.model} on {ns.platform} is at {m.tokens} tokens/pair, not {ns.tokens}: "
            "drop --tokens, or pass --items-per-s measured at your length"
        )
    return m.items_per_s, m.tokens, f"measured: {m.model} on {m.platform}, {m.describe()}"


def plans_from_args(ns: argparse.Namespace) -> tuple[CapacityPlan, CapacityPlan]:
    """The plan for the given load and for ``--growth`` x it on the same partitions. The worker's own
    batch limits (its flags' JOBSCORE_* variables) apply unless given here. Raises ValueError."""
    from ops.capacity import Knobs, Load, plan

    w = WorkerSettings()
    items_per_s, tokens, _ = engine_speed(ns)
    load = Load(ns.rate, ns.candidates, tokens, items_per_s)
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
    from ops.capacity import render

    command_settings(ns, ToolSettings)
    try:
        _, _, source = engine_speed(ns)
        p, p10 = plans_from_args(ns)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ns.json:
        print(json.dumps({"plan": p.as_dict(), "growth": p10.as_dict(), "speed": source}, indent=2, default=str))
    else:
        print(f"engine speed: {source}")
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
    p.add_argument(
        "--model",
        default=DEFAULT_SCORER,
        help=f"Whose measured speed to size with (bench/results/throughput.json): {SCORER_PRUNED}, {SCORER_FULL} "
        f"(default: the default scorer, {DEFAULT_SCORER}), or a bench config such as qwen3-0.6b.",
    )
    p.add_argument(
        "--platform", choices=["gpu", "cpu"], default="gpu", help="Which measured figure: one GPU or a CPU host."
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="Prompt tokens per pair (instruction + query + summary); default: the measured figure's.",
    )
    p.add_argument(
        "--items-per-s",
        type=float,
        default=None,
        help="Pairs/s one worker sustains at --tokens, if you measured it yourself (`jobscore bench`); default: the "
        "newest measured figure for --model on --platform. For reference, the paper: ~2,000 per GPU; LinkedIn: "
        "2,200 per H100 at ~200 tokens.",
    )
    p.add_argument("--utilisation", type=float, default=0.7, help="Target busy share per worker (0-1).")
    p.add_argument("--latency-budget", type=float, default=0.5, help="p99 request latency budget, seconds.")
    p.add_argument("--growth", type=float, default=10.0, help="Traffic multiple the partitions are provisioned for.")
    p.add_argument("--partitions", type=int, default=None, help="An existing requests topic's partition count.")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="Default: the worker's max_batch_tokens.")
    p.add_argument("--max-batch-items", type=int, default=None, help="Default: the worker's max_batch_items.")
    p.add_argument("--max-wait-ms", type=float, default=None, help="Default: the worker's max_wait_ms.")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
