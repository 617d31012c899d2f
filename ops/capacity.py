"""Capacity model: from traffic and a measured engine speed to workers, partitions, KEDA thresholds and
the latency to expect. Pure functions, no I/O (`jobscore capacity` prints them; deploy/README.md works
the paper's figures through them).

The unit of work is the query–candidate *pair*, not the message: a request carries 1 or 1,000
candidates, so a lag of 10 messages can be 10 or 10,000 pairs. Everything here is in pairs.

Model (stated so it can be argued with):
- demand D = rate x candidates pairs/s; one worker scores X pairs/s at T prompt tokens per pair (X is
  measured: bench/RESULTS.md, `jobscore bench`). Workers run at a target utilisation u < 1 because
  latency explodes near saturation.
- A consumer group has at most one consumer per partition, and a worker's load is the partitions it
  owns: with P partitions over W workers some own ceil(P/W). Workers are sized so the busiest one
  stays under u, and partitions are provisioned once for ``growth`` x today's traffic (partitions
  cannot shrink, and adding them remaps keys).
- Latency: each worker is an M/D/1 queue of requests (Poisson arrivals, service C/X seconds each). p99
  = batch wait + the engine batch its last pairs ride in (min(batch, C) pairs) + service + the 99th
  percentile of the M/D/1 wait (exponential tail approximation). An estimate to size with, not a measurement.
- KEDA threshold (pairs of lag per replica, Prometheus scaler, AverageValue): the backlog one worker
  drains within what the latency budget leaves after service. Above it, queued work per replica would
  blow the budget: scale out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# Partition counts that divide evenly among many replica counts (so W workers often own equal shares).
NICE_PARTITIONS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class Load:
    """Traffic and the measured engine speed it runs on."""

    rate: float  # scoring requests per second
    candidates: float  # mean candidates (pairs) per request
    tokens: int  # prompt tokens per pair (instruction + query + summary)
    items_per_s: float  # pairs/s one worker sustains at `tokens` (bench/RESULTS.md)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.candidates < 1 or self.tokens < 1 or self.items_per_s <= 0:
            raise ValueError("rate and items/s must be > 0, candidates and tokens >= 1")

    @property
    def pairs_per_s(self) -> float:
        return self.rate * self.candidates

    def scaled(self, factor: float) -> Load:
        return Load(self.rate * factor, self.candidates, self.tokens, self.items_per_s)


@dataclass(frozen=True)
class Knobs:
    """Operator choices; the batch limits default to WorkerSettings' defaults."""

    utilisation: float = 0.7  # target busy share of each worker's engine
    latency_budget_s: float = 0.5  # p99 request latency the deployment must meet
    growth: float = 10.0  # partitions are provisioned for this multiple of today's traffic
    max_batch_tokens: int = 16_384
    max_batch_items: int = 512
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.utilisation < 1:
            raise ValueError("utilisation must be in (0, 1): a saturated worker's queue grows without bound")


@dataclass(frozen=True)
class Latency:
    service_s: float  # one request's pairs through the engine at full speed
    batch_s: float  # one engine batch (what a request may wait behind)
    wait_mean_s: float  # M/D/1 mean queueing wait
    p50_s: float
    p99_s: float


@dataclass(frozen=True)
class CapacityPlan:
    load: Load
    knobs: Knobs
    pairs_per_s: float
    workers: int
    partitions: int
    busiest_worker_utilisation: float
    batch_items: int
    latency: Latency
    within_budget: bool
    keda_threshold_pairs: int
    keda_min_replicas: int
    keda_max_replicas: int
    partitions_given: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def batch_items(tokens: int, knobs: Knobs) -> int:
    """Pairs per engine batch: the token budget or the item cap, whichever binds first."""
    return max(1, min(knobs.max_batch_items, knobs.max_batch_tokens // tokens))


def min_workers(pairs_per_s: float, items_per_s: float, utilisation: float) -> int:
    """Workers for a demand if load spread perfectly (the lower bound before partition shares)."""
    return max(1, math.ceil(pairs_per_s / (items_per_s * utilisation) - 1e-9))


def partitions_for(pairs_per_s: float, items_per_s: float, utilisation: float) -> int:
    """Requests-topic partitions for a demand: at least one per worker it needs, from NICE_PARTITIONS."""
    need = min_workers(pairs_per_s, items_per_s, utilisation)
    return next((p for p in NICE_PARTITIONS if p >= need), need)


def workers_for(pairs_per_s: float, items_per_s: float, utilisation: float, partitions: int) -> int:
    """Fewest workers whose busiest member (ceil(P/W) partitions) stays under the target utilisation.
    Returns ``partitions`` + 1 when even one partition per worker is too much: add partitions."""
    per_partition = pairs_per_s / partitions
    for w in range(min_workers(pairs_per_s, items_per_s, utilisation), partitions + 1):
        if math.ceil(partitions / w) * per_partition <= items_per_s * utilisation + 1e-9:
            return w
    return partitions + 1


def latency(load: Load, rate_per_worker: float, knobs: Knobs) -> Latency:
    """Request latency on a worker receiving ``rate_per_worker`` requests/s (M/D/1)."""
    service = load.candidates / load.items_per_s
    # The batch a request's last pairs ride in: never more than a full engine batch, and a request
    # alone fills no more than its own candidates.
    batch = min(batch_items(load.tokens, knobs), load.candidates) / load.items_per_s
    rho = rate_per_worker * service
    fixed = knobs.max_wait_ms / 1000 + batch + service
    if rho >= 1:
        return Latency(service, batch, math.inf, math.inf, math.inf)
    wait_mean = rho * service / (2 * (1 - rho))
    # P(wait > t) ~= rho * exp(-t * rho / wait_mean): the M/D/1 tail as an exponential with the right mean.
    p99_wait = (wait_mean / rho) * math.log(100 * rho) if rho > 0.01 else 0.0
    p50_wait = (wait_mean / rho) * math.log(2 * rho) if rho > 0.5 else 0.0
    return Latency(service, batch, wait_mean, fixed - batch / 2 + p50_wait, fixed + max(0.0, p99_wait))


def busiest_rate(rate: float, workers: int, partitions: int) -> float:
    """Requests/s of the worker owning the most partitions (keys spread evenly over partitions)."""
    return rate * math.ceil(partitions / workers) / partitions


def keda_threshold(load: Load, knobs: Knobs) -> int:
    """Pairs of lag per replica above which KEDA adds replicas: what one worker drains at full speed in
    the part of the latency budget left after its own batch wait, a running batch and the service time.
    Never below one engine batch (or one request, if smaller): less would scale on the batch being assembled."""
    lat = latency(load, 0.0, knobs)  # no queueing: the fixed part only
    left = knobs.latency_budget_s - (knobs.max_wait_ms / 1000 + lat.batch_s + lat.service_s)
    floor = math.ceil(min(batch_items(load.tokens, knobs), load.candidates))
    return max(floor, math.floor(load.items_per_s * max(0.0, left)))


def size_workers(load: Load, k: Knobs, partitions: int) -> tuple[int, list[str]]:
    """Workers for ``load`` on ``partitions``: enough for the target utilisation on the busiest worker,
    then more until its p99 fits the budget (big requests queue behind each other), up to one worker
    per partition. Returns the count and notes on what bound it."""
    d = load.pairs_per_s
    notes: list[str] = []
    w = workers_for(d, load.items_per_s, k.utilisation, partitions)
    if w > partitions:
        notes.append(
            f"{partitions} partitions cannot carry {d:,.0f} pairs/s: one partition ({d / partitions:,.0f} pairs/s) "
            f"exceeds a worker at {k.utilisation:.0%} ({load.items_per_s * k.utilisation:,.0f}); raise the partitions"
        )
        return partitions, notes
    throughput_workers = w
    while w < partitions and latency(load, busiest_rate(load.rate, w, partitions), k).p99_s > k.latency_budget_s:
        w += 1
    if latency(load, busiest_rate(load.rate, w, partitions), k).p99_s > k.latency_budget_s:
        notes.append(
            f"even {w} workers on {partitions} partitions leave p99 over {k.latency_budget_s}s: more partitions "
            "(and workers), fewer candidates per request, or a faster engine"
        )
    elif w > throughput_workers:
        notes.append(
            f"{throughput_workers} workers carry {d:,.0f} pairs/s at {k.utilisation:.0%}; {w} keep p99 within "
            f"{k.latency_budget_s}s (a {load.candidates:g}-candidate request queues behind others)"
        )
    return w, notes


def provision_partitions(load: Load, k: Knobs) -> int:
    """Requests-topic partitions for ``k.growth`` x ``load``: the smallest NICE_PARTITIONS count on which
    the grown load is sized within budget (or, where no count meets the budget, carried at all)."""
    grown = load.scaled(k.growth)
    floor = partitions_for(grown.pairs_per_s, load.items_per_s, k.utilisation)
    fallback = floor
    for parts in (p for p in NICE_PARTITIONS if p >= floor):
        w, _ = size_workers(grown, k, parts)
        if latency(grown, busiest_rate(grown.rate, w, parts), k).p99_s <= k.latency_budget_s:
            return parts
    return fallback


def plan(load: Load, knobs: Knobs | None = None, partitions: int | None = None) -> CapacityPlan:
    """Workers, partitions, KEDA bounds and the latency to expect for ``load``.

    ``partitions``: an existing requests topic's count; by default provisioned for ``knobs.growth`` x.
    """
    k = knobs or Knobs()
    d = load.pairs_per_s
    parts = partitions or provision_partitions(load, k)
    w, notes = size_workers(load, k, parts)
    rate = busiest_rate(load.rate, w, parts)
    busiest = rate * load.candidates / load.items_per_s
    lat = latency(load, rate, k)
    if lat.service_s + lat.batch_s + k.max_wait_ms / 1000 > k.latency_budget_s:
        notes.append(
            f"a {load.candidates:g}-candidate request alone takes {lat.service_s:.3f}s of engine time plus a "
            f"{lat.batch_s:.3f}s batch: no worker count meets a {k.latency_budget_s}s budget; lower candidates or "
            "tokens per pair, or use a faster engine"
        )
    if parts % w:
        notes.append(
            f"{parts} partitions over {w} workers: the busiest owns {math.ceil(parts / w)} partitions "
            f"({busiest:.0%} busy); replica counts dividing {parts} spread load evenly"
        )
    grown_workers, _ = size_workers(load.scaled(k.growth), k, parts)
    return CapacityPlan(
        load=load,
        knobs=k,
        pairs_per_s=d,
        workers=w,
        partitions=parts,
        busiest_worker_utilisation=busiest,
        batch_items=batch_items(load.tokens, k),
        latency=lat,
        within_budget=lat.p99_s <= k.latency_budget_s,
        keda_threshold_pairs=keda_threshold(load, k),
        keda_min_replicas=w,
        keda_max_replicas=max(w, grown_workers),
        partitions_given=partitions is not None,
        notes=notes,
    )


def render(p: CapacityPlan, p10: CapacityPlan) -> str:
    """The plan and its growth case as text for an operator."""
    ld, k = p.load, p.knobs

    def ms(s: float) -> str:
        return "unbounded" if math.isinf(s) else f"{s * 1000:.0f} ms"

    lines = [
        f"load: {ld.rate:g} requests/s x {ld.candidates:g} candidates = {p.pairs_per_s:,.0f} pairs/s, "
        f"{ld.tokens} tokens/pair, {ld.items_per_s:,.0f} pairs/s per worker (target {k.utilisation:.0%} busy)",
        f"workers:      {p.workers}  (busiest at {p.busiest_worker_utilisation:.0%})",
        f"partitions:   {p.partitions}  (requests topic; "
        + ("as given" if p.partitions_given else f"provisioned for {k.growth:g}x traffic — they cannot shrink")
        + ")",
        f"engine batch: up to {p.batch_items} pairs; a request's last one takes {ms(p.latency.batch_s)}",
        f"latency:      p50 ~{ms(p.latency.p50_s)}, p99 ~{ms(p.latency.p99_s)} "
        f"(budget {ms(k.latency_budget_s)}: {'met' if p.within_budget else 'NOT met'})",
        f"KEDA:         threshold {p.keda_threshold_pairs:,} pairs of lag per replica; "
        f"minReplicaCount {p.keda_min_replicas}, maxReplicaCount {p.keda_max_replicas}",
        f"at {k.growth:g}x ({p10.load.rate:g} requests/s, {p10.pairs_per_s:,.0f} pairs/s): {p10.workers} workers on "
        f"{p10.partitions} partitions, p99 ~{ms(p10.latency.p99_s)}",
    ]
    lines += [f"note: {n}" for n in p.notes] + [f"note at {k.growth:g}x: {n}" for n in p10.notes if n not in p.notes]
    return "\n".join(lines)
