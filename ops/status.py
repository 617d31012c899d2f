"""`jobscore status`: one look at a deployment, read from the broker and Redis (no service is asked).

Per consumer group and partition: committed offset, end offset, lag in records and, for the request
lanes, in query-candidate pairs (the pending requests are read and their candidates counted, bounded);
the group's members and their assignment; rankings/s and dead letters/s over the last window (from the
records' timestamps); dead letters by stage and error type and the model/summarizer versions in the
recent rankings; summary cache entries per summarizer version (Redis SCAN by key prefix).

Topics are read with the one bounded reader (client/kafka.py `TopicReader`), which finds each partition's
true end (the embedded broker's short ListOffsets answers are corrected there).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.structs import ConsumerRecord

from jobscore.kafka import TopicReader, topic_reader
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from schemas import RANKINGS, SCORE_REQUESTS, SchemaError
from schemas.deadletters import read_dead_letter
from schemas.summary import KEY_PREFIX


@dataclass(frozen=True)
class GroupSpec:
    """A consumer group to report on: which topics it consumes, and which of them are request lanes."""

    group: str
    role: str
    topics: tuple[str, ...]
    request_lanes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (it starts at the log start)
    end: int
    lag: int
    pairs: int | None = None  # pending query-candidate pairs (request lanes only)
    pairs_estimated: bool = False  # more pending than the scan bound: pairs = mean per request x lag


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assignment: tuple[str, ...]  # "topic[partition]"; empty where the broker does not report it (tansu)


@dataclass(frozen=True)
class GroupStatus:
    group: str
    role: str
    state: str
    members: tuple[Member, ...]
    partitions: tuple[PartitionLag, ...]

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def pairs(self) -> int | None:
        counted = [p.pairs for p in self.partitions if p.pairs is not None]
        return sum(counted) if counted else None


@dataclass(frozen=True)
class DeadLetterCount:
    stage: str
    error_type: str
    count: int


@dataclass(frozen=True)
class MadeBy:
    model_id: str
    model_revision: str
    summarizer_version: str
    rankings: int


@dataclass(frozen=True)
class CacheCount:
    version: str
    entries: int


@dataclass(frozen=True)
class Status:
    at: float
    window_s: float
    groups: tuple[GroupStatus, ...]
    rankings_per_s: float
    dead_letters_per_s: float
    recent_rankings: int  # how many of the latest rankings the versions below come from
    recent_dead_letters: int  # how many of the latest dead letters the breakdown below comes from
    dead_letters: tuple[DeadLetterCount, ...]
    made_by: tuple[MadeBy, ...]
    cache: tuple[CacheCount, ...]
    cache_scan_capped: bool
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for g, gd in zip(self.groups, d["groups"], strict=True):
            gd["lag"] = g.lag
            gd["pairs"] = g.pairs
        return d


def default_groups(
    settings: CommonSettings, worker_group: str | None = None, summarizer_group: str | None = None
) -> list[GroupSpec]:
    """The deployment's groups: the workers on every request lane, the summarizers on the postings."""
    lanes = tuple(
        dict.fromkeys(
            v
            for k, v in sorted(settings.model_dump().items())
            if k.startswith("topic_requests") and isinstance(v, str) and v
        )
    )
    return [
        GroupSpec(worker_group or WorkerSettings.model_fields["group_id"].default, "worker", lanes, lanes),
        GroupSpec(
            summarizer_group or SummarizerSettings.model_fields["group_id"].default,
            "summarizer",
            (settings.topic_postings,),
        ),
    ]


def redis_url(settings: CommonSettings) -> str:
    url = settings.redis_url
    return url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)


async def _committed(admin: Any, group: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Committed offsets; partitions the group never committed are left out."""
    # Partitions are listed explicitly: tansu cannot answer the "all partitions" form of OffsetFetch.
    got = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    return {tp: om.offset for tp, om in got.items() if om.offset >= 0}


async def _members(admin: Any, group: str) -> tuple[str, tuple[Member, ...]]:
    """The group's state and members (DescribeGroups). The member tuple's layout depends on the version."""
    state, members = "Unknown", []
    for resp in await admin.describe_consumer_groups([group]):
        for g in resp.groups:
            state = g[2] or "Empty"
            for m in g[5]:
                member_id, client_id, host, assignment = (
                    (m[0], m[1], m[2], m[4]) if len(m) == 5 else (m[0], m[2], m[3], m[5])
                )
                parts: tuple[str, ...] = ()
                if assignment:
                    try:
                        a = ConsumerProtocolMemberAssignment.decode(assignment)
                        parts = tuple(f"{t}[{p}]" for t, ps in a.assignment for p in sorted(ps))
                    except Exception:
                        parts = ("(undecodable assignment)",)
                members.append(Member(member_id, client_id, host, parts))
    return state, tuple(members)


def _candidates(value: bytes | None) -> int:
    try:
        return len(dict.fromkeys(SCORE_REQUESTS.decode(value).candidates))
    except SchemaError:
        return 0  # dead-lettered by the worker, never scored


async def group_status(reader: TopicReader, spec: GroupSpec, pair_scan: int) -> GroupStatus:
    tps = [tp for t in spec.topics for tp in await reader.partitions(t)]
    bounds = await reader.bounds(tps)
    committed = await _committed(reader.admin, spec.group, tps)
    state, members = await _members(reader.admin, spec.group)
    # Pending requests are read to count their candidates, at most pair_scan per partition.
    scan: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        if tp.topic in spec.request_lanes:
            start = committed.get(tp, bounds[tp][0])
            scan[tp] = (start, min(bounds[tp][1], start + pair_scan))
    pairs: Counter[TopicPartition] = Counter()
    read: Counter[TopicPartition] = Counter()
    async for rec in reader.read(scan):
        tp = TopicPartition(rec.topic, rec.partition)
        pairs[tp] += _candidates(rec.value)
        read[tp] += 1
    parts = []
    for tp in tps:
        begin, end = bounds[tp]
        c = committed.get(tp)
        lag = max(0, end - (c if c is not None else begin))
        n_pairs, estimated = None, False
        if tp in scan:
            n_pairs = pairs[tp]
            if read[tp] and read[tp] < lag:
                n_pairs, estimated = round(pairs[tp] / read[tp] * lag), True
        parts.append(PartitionLag(tp.topic, tp.partition, c, end, lag, n_pairs, estimated))
    return GroupStatus(spec.group, spec.role, state, members, tuple(parts))


@dataclass
class _Tail:
    in_window: int = 0
    scanned: int = 0
    oldest_ts: float | None = None
    capped: bool = False  # some partition holds more than was read
    records: list[ConsumerRecord] = field(default_factory=list)


async def _tail(reader: TopicReader, topic: str, recent: int, since: float) -> _Tail:
    """The last ``recent`` records of every partition; counts those stamped at or after ``since``."""
    tps = await reader.partitions(topic)
    bounds = await reader.bounds(tps)
    out = _Tail(capped=any(e - recent > b for b, e in bounds.values()))
    async for rec in reader.read({tp: (max(b, e - recent), e) for tp, (b, e) in bounds.items()}):
        ts = rec.timestamp / 1e3
        out.scanned += 1
        out.records.append(rec)
        out.oldest_ts = ts if out.oldest_ts is None else min(out.oldest_ts, ts)
        if ts >= since:
            out.in_window += 1
    return out


async def cache_counts(url: str, max_keys: int) -> tuple[tuple[CacheCount, ...], bool]:
    """Entries per summarizer version: SCAN over ``jobscore:summary:*`` (never KEYS), at most max_keys."""
    client = aioredis.Redis.from_url(url, decode_responses=False)
    counts: Counter[str] = Counter()
    seen = 0
    prefix = f"{KEY_PREFIX}:".encode()
    try:
        async for key in client.scan_iter(match=prefix + b"*", count=1000):
            version = key[len(prefix) :].split(b":", 1)[0].decode(errors="replace")
            counts[version] += 1
            seen += 1
            if seen >= max_keys:
                break
    finally:
        await client.aclose()
    return tuple(CacheCount(v, n) for v, n in sorted(counts.items())), seen >= max_keys


async def collect_status(
    settings: CommonSettings,
    groups: Sequence[GroupSpec],
    window_s: float = 60.0,
    recent: int = 1000,
    pair_scan: int = 10_000,
    max_cache_keys: int = 1_000_000,
) -> Status:
    """Everything `jobscore status` shows, as data (``--json`` prints exactly this)."""
    now = time.time()
    notes: list[str] = []
    async with topic_reader(settings, "status") as reader:
        gs = [await group_status(reader, g, pair_scan) for g in groups]
        ranks = await _tail(reader, settings.topic_rankings, recent, now - window_s)
        dls = await _tail(reader, settings.topic_dead_letters, recent, now - window_s)
    for name, t in (("rankings", ranks), ("dead letters", dls)):
        if t.capped and t.oldest_ts is not None and t.oldest_ts > now - window_s:
            notes.append(f"{name}/s is a lower bound: all {t.scanned} records read fall in the window (raise --recent)")
    made: Counter[tuple[str, str, str]] = Counter()
    for rec in ranks.records:
        try:
            r = RANKINGS.decode(rec.value)
        except SchemaError:
            continue
        made[(r.model_id, r.model_revision, r.summarizer_version)] += 1
    dead: Counter[tuple[str, str]] = Counter()
    for rec in dls.records:
        try:
            d = read_dead_letter(rec.key, rec.value, rec.headers)
        except SchemaError:
            dead[("?", "undecodable dead letter")] += 1
            continue
        dead[(d.stage, d.error_type)] += 1
    cache, capped = await cache_counts(redis_url(settings), max_cache_keys)
    if capped:
        notes.append(f"summary cache counts stop after {max_cache_keys} keys (--max-cache-keys)")
    for g in gs:
        if g.members and all(not m.assignment for m in g.members):
            notes.append(f"group {g.group}: the broker reports members without their assignment (tansu does)")
    return Status(
        at=now,
        window_s=window_s,
        groups=tuple(gs),
        rankings_per_s=ranks.in_window / window_s,
        dead_letters_per_s=dls.in_window / window_s,
        recent_rankings=ranks.scanned,
        recent_dead_letters=dls.scanned,
        dead_letters=tuple(DeadLetterCount(s, e, n) for (s, e), n in dead.most_common()),
        made_by=tuple(MadeBy(m, r, v, n) for (m, r, v), n in made.most_common()),
        cache=cache,
        cache_scan_capped=capped,
        notes=tuple(notes),
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def render_text(st: Status) -> str:
    """Aligned columns, as `kafka-consumer-groups --describe` prints them (greppable, pasteable)."""
    out = [f"jobscore status at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.at))}"]
    for g in st.groups:
        pairs = f", {g.pairs} pairs" if g.pairs is not None else ""
        out += ["", f"GROUP {g.group} ({g.role}, {g.state}, {len(g.members)} members): lag {g.lag} records{pairs}"]
        rows = [
            [
                p.topic,
                p.partition,
                p.committed,
                p.end,
                p.lag,
                "" if p.pairs is None else f"{'~' if p.pairs_estimated else ''}{p.pairs}",
            ]
            for p in g.partitions
        ]
        out += _table(["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG-PAIRS"], rows)
        if g.members:
            out += _table(
                ["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"],
                [[m.member_id, m.client_id, m.host, ",".join(m.assignment) or "(not reported)"] for m in g.members],
            )
    out += [
        "",
        f"THROUGHPUT (last {st.window_s:.0f}s): rankings {st.rankings_per_s:.2f}/s, "
        f"dead letters {st.dead_letters_per_s:.2f}/s",
        "",
        f"DEAD LETTERS (the latest {st.recent_dead_letters} read)",
    ]
    out += _table(["STAGE", "ERROR-TYPE", "COUNT"], [[d.stage, d.error_type, d.count] for d in st.dead_letters])
    out += ["", f"MODELS IN RECENT RANKINGS ({st.recent_rankings} read)"]
    out += _table(
        ["MODEL", "REVISION", "SUMMARIZER", "RANKINGS"],
        [[m.model_id, m.model_revision, m.summarizer_version, m.rankings] for m in st.made_by],
    )
    out += ["", "SUMMARY CACHE (Redis)"]
    out += _table(["VERSION", "ENTRIES"], [[c.version, c.entries] for c in st.cache])
    out += [f"note: {n}" for n in st.notes]
    return "\n".join(out)


async def watch(
    settings: CommonSettings, groups: Sequence[GroupSpec], interval_s: float, stop: asyncio.Event, **kw: Any
) -> AsyncIterator[Status]:
    """`collect_status` every ``interval_s`` until ``stop``."""
    while not stop.is_set():
        yield await collect_status(settings, groups, **kw)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
