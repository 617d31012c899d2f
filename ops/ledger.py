"""The ledger: what was asked of the system versus what it answered, read back from the topics themselves.

Operators run it after an incident (`jobscore ledger`); the fault suite prints one at the end of every
scenario. Two books:

**requests** — every record of the requests topic in the window is one *request*, identified by its
``request_id`` (or, when its bytes do not decode, by its record ``topic[partition]@offset``). A request
is **answered** when at least one `Ranking` with its id is on the rankings topic, **dead-lettered** when
a `DeadLetter` names it (by the request id inside the dead letter's original bytes when those decode,
else by the original record's topic, partition and offset), and **unanswered** — lost, unless a worker
is still working on it — when neither. A request rejected as too large has both a ranking and a dead
letter. **Duplicates** are rankings beyond the first per request id: at-least-once replays, which
consumers deduplicate.

**postings** — the latest record per job id on the postings topic versus the summaries present in
Redis for one summarizer version: summarized (present, same content hash), stale (present, older
content), dead-lettered by the summarizer, missing (none of these), and withdrawn postings whose
summary is still there.

Reading is bounded: every partition is read from its beginning to its true end, plus whatever arrives
before the partition has been idle for ``idle_s`` (client/kafka.py `TopicReader.read_until_idle`, which
also corrects the embedded broker's short ListOffsets answers). On real Kafka the idle grace only adds the
few records produced meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from aiokafka.structs import ConsumerRecord

from jobscore.kafka import topic_name, topic_reader
from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, DeadLetter, JobPosted, SchemaError
from schemas.deadletters import read_dead_letter
from schemas.summary import SummaryRecord, content_hash

# Ids per Redis MGET when checking postings against the summary cache.
MGET_CHUNK = 1000


class RecordRef(NamedTuple):
    """Where a record is: what a dead letter names when its original bytes do not decode."""

    topic: str
    partition: int
    offset: int

    def label(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Window:
    """Which requests (or postings) the ledger counts: by record time and/or by id prefix.

    Time is the record's broker timestamp (set by the producer), so undecodable records can be placed
    in the window too. Answers (rankings, dead letters) are read whatever their time: an answer to a
    request in the window may come after it.
    """

    since: float | None = None
    until: float | None = None
    id_prefix: str | None = None

    def admits(self, ts_ms: int | None, ident: str | None) -> bool:
        if self.id_prefix is not None and not (ident or "").startswith(self.id_prefix):
            return False
        if ts_ms is None or ts_ms < 0:
            return self.since is None and self.until is None
        ts = ts_ms / 1e3
        return (self.since is None or ts >= self.since) and (self.until is None or ts <= self.until)

    def describe(self) -> str:
        def iso(t: float | None) -> str:
            return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return f"since {iso(self.since)}  until {iso(self.until)}  id prefix {self.id_prefix or '-'}"


@dataclass(frozen=True)
class TopicRead:
    """How one topic was read: records seen and whether every partition reached its end."""

    topic: str
    partitions: int
    records: int
    complete: bool


@dataclass
class RequestLedger:
    """Requests sent versus answered. ``unanswered`` is the loss figure: 0 after a healthy incident."""

    window: str
    sent: int = 0
    undecodable: int = 0  # requests identified by record position: their bytes did not decode
    answered: int = 0
    dead_lettered: int = 0
    answered_and_dead_lettered: int = 0
    unanswered: int = 0
    duplicates: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # status of the first ranking per request
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    unanswered_ids: list[str] = field(default_factory=list)
    reads: list[TopicRead] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.unanswered

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost}

    def render(self, list_limit: int = 50) -> str:
        """The ledger as an operator reads it (what `jobscore ledger` and the fault suite print)."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letter_kinds.items())) or "-"
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())) or "-"
        lines = [
            f"requests ledger  ({self.window})",
            "read           " + "  ".join(_read_line(r) for r in self.reads),
            f"sent           {self.sent:>7}  distinct requests ({self.undecodable} undecodable, named by position)",
            f"answered       {self.answered:>7}  with a ranking (first ranking's status: {statuses})",
            f"dead-lettered  {self.dead_lettered:>7}  ({kinds}); {self.answered_and_dead_lettered} of them also "
            "answered (rejected)",
            f"unanswered     {self.unanswered:>7}  neither answered nor dead-lettered: lost, unless a worker "
            "still has them",
            f"duplicates     {self.duplicates:>7}  rankings beyond the first per request id (replays; consumers "
            "deduplicate)",
        ]
        if self.unanswered_ids:
            shown = self.unanswered_ids[:list_limit]
            more = len(self.unanswered_ids) - len(shown)
            lines.append("unanswered requests:")
            lines += [f"  {i}" for i in shown]
            if more:
                lines.append(f"  … {more} more (--json lists all)")
        return "\n".join(lines)


@dataclass
class PostingsLedger:
    """Postings sent versus summaries in Redis for one summarizer version. ``missing`` is the loss figure."""

    window: str
    summarizer_version: str
    postings: int = 0  # distinct job ids (latest record each), tombstones included
    live: int = 0
    withdrawn: int = 0
    undecodable: int = 0
    summarized: int = 0
    stale: int = 0  # a summary exists but of older content than the latest posting
    dead_lettered: int = 0
    missing: int = 0
    withdrawn_still_cached: int = 0
    missing_ids: list[str] = field(default_factory=list)
    reads: list[TopicRead] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.missing

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lost": self.lost}

    def render(self, list_limit: int = 50) -> str:
        lines = [
            f"postings ledger  ({self.window}; summarizer version {self.summarizer_version})",
            "read           " + "  ".join(_read_line(r) for r in self.reads),
            f"postings       {self.postings:>7}  distinct job ids ({self.live} live, {self.withdrawn} withdrawn, "
            f"{self.undecodable} undecodable)",
            f"summarized     {self.summarized:>7}  live postings with a summary of their latest content",
            f"stale          {self.stale:>7}  summary of an older version of the posting",
            f"dead-lettered  {self.dead_lettered:>7}  by the summarizer",
            f"missing        {self.missing:>7}  live, no summary, no dead letter: lost unless the summarizer "
            "still has them",
            f"withdrawn, still cached {self.withdrawn_still_cached}",
        ]
        if self.missing_ids:
            shown = self.missing_ids[:list_limit]
            lines.append("missing postings:")
            lines += [f"  {i}" for i in shown]
            if len(self.missing_ids) > len(shown):
                lines.append(f"  … {len(self.missing_ids) - len(shown)} more (--json lists all)")
        return "\n".join(lines)


def _read_line(r: TopicRead) -> str:
    return f"{r.topic}: {r.records} records/{r.partitions} partitions" + ("" if r.complete else " (INCOMPLETE)")


# --- reading a topic, bounded -----------------------------------------------------------------------


async def read_topic(
    settings: CommonSettings,
    topic: str,
    on_record: Callable[[ConsumerRecord], None],
    idle_s: float = 1.0,
    timeout_s: float = 300.0,
) -> TopicRead:
    """Feed every record of ``topic`` to ``on_record`` up to each partition's true end and on until each has
    been idle for ``idle_s`` (client/kafka.py `TopicReader.read_until_idle`). No consumer group: reading
    commits nothing and does not disturb the services' groups."""
    async with topic_reader(settings, "ledger", with_admin=False) as reader:
        partitions, n, complete = await reader.read_until_idle(topic, on_record, idle_s, timeout_s)
    return TopicRead(topic, partitions, n, complete)


# --- the requests ledger ----------------------------------------------------------------------------


@dataclass
class _RequestBook:
    window: Window
    ids: dict[str, RecordRef] = field(default_factory=dict)  # request id → its first record
    undecodable: dict[RecordRef, str] = field(default_factory=dict)  # record → label
    by_record: dict[RecordRef, str] = field(default_factory=dict)  # every selected record → its unit
    rankings: Counter[str] = field(default_factory=Counter)
    first_status: dict[str, str] = field(default_factory=dict)
    lettered: dict[str, str] = field(default_factory=dict)  # unit → error_type of its first dead letter
    letters: list[DeadLetter] = field(default_factory=list)

    def on_request(self, rec: ConsumerRecord) -> None:
        ref = RecordRef(rec.topic, rec.partition, rec.offset)
        try:
            rid: str | None = SCORE_REQUESTS.decode(rec.value).request_id
        except SchemaError:
            rid = None
        key = _text(rec.key)
        if not self.window.admits(rec.timestamp, rid if rid is not None else key):
            return
        if rid is None:
            self.undecodable[ref] = ref.label() + (f" (key {key})" if key else "")
            self.by_record[ref] = self.undecodable[ref]
        else:
            self.ids.setdefault(rid, ref)
            self.by_record[ref] = rid

    def on_ranking(self, rec: ConsumerRecord) -> None:
        try:
            r = RANKINGS.decode(rec.value)
        except SchemaError:
            return  # not ours to judge here; `jobscore tail --topic results` shows it
        self.rankings[r.request_id] += 1
        self.first_status.setdefault(r.request_id, r.status)

    def on_dead_letter(self, rec: ConsumerRecord) -> None:
        with contextlib.suppress(SchemaError):
            self.letters.append(read_dead_letter(rec.key, rec.value, rec.headers))

    def settle(self, requests_topic: str) -> None:
        """Match dead letters once every request record is known (they may be read first)."""
        for dl in self.letters:
            if dl.topic != requests_topic:
                continue
            unit: str | None = None
            with contextlib.suppress(SchemaError):
                unit = SCORE_REQUESTS.decode(dl.original).request_id
            if unit not in self.ids:
                unit = self.by_record.get(RecordRef(dl.topic, dl.partition, dl.offset))
            if unit is not None:
                self.lettered.setdefault(unit, dl.error_type)
        self.letters.clear()


async def request_ledger(
    settings: CommonSettings, window: Window, idle_s: float = 1.0, timeout_s: float = 300.0
) -> RequestLedger:
    """Read the requests, rankings and dead-letter topics (concurrently) and balance them."""
    book = _RequestBook(window)
    req_topic = topic_name(settings, SCORE_REQUESTS)
    reads = await asyncio.gather(
        read_topic(settings, req_topic, book.on_request, idle_s, timeout_s),
        read_topic(settings, topic_name(settings, RANKINGS), book.on_ranking, idle_s, timeout_s),
        read_topic(settings, topic_name(settings, DEAD_LETTERS), book.on_dead_letter, idle_s, timeout_s),
    )
    book.settle(req_topic)
    units = list(book.ids) + list(book.undecodable.values())
    led = RequestLedger(window=window.describe(), reads=list(reads))
    led.sent = len(units)
    led.undecodable = len(book.undecodable)
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for u in units:
        answered = book.rankings[u] > 0
        lettered = u in book.lettered
        if answered:
            led.answered += 1
            led.duplicates += book.rankings[u] - 1
            statuses[book.first_status[u]] += 1
        if lettered:
            led.dead_lettered += 1
            kinds[book.lettered[u]] += 1
        if answered and lettered:
            led.answered_and_dead_lettered += 1
        if not answered and not lettered:
            led.unanswered_ids.append(u)
    led.unanswered = len(led.unanswered_ids)
    led.statuses = dict(statuses)
    led.dead_letter_kinds = dict(kinds)
    return led


# --- the postings ledger ----------------------------------------------------------------------------


class _Latest(NamedTuple):
    ref: RecordRef
    posting: JobPosted


@dataclass
class _PostingsBook:
    window: Window
    latest: dict[str, _Latest] = field(default_factory=dict)
    undecodable: dict[RecordRef, str] = field(default_factory=dict)
    letters: list[DeadLetter] = field(default_factory=list)

    def on_posting(self, rec: ConsumerRecord) -> None:
        ref = RecordRef(rec.topic, rec.partition, rec.offset)
        try:
            p: JobPosted | None = POSTINGS.decode(rec.value)
        except SchemaError:
            p = None
        ident = p.job_id if p is not None else _text(rec.key)
        if not self.window.admits(rec.timestamp, ident):
            return
        if p is None:
            self.undecodable[ref] = ref.label()
            return
        # Keyed by job id: one partition holds every version in order, so the later offset is the latest.
        prev = self.latest.get(p.job_id)
        if prev is None or (prev.ref.partition, prev.ref.offset) <= (ref.partition, ref.offset):
            self.latest[p.job_id] = _Latest(ref, p)

    def on_dead_letter(self, rec: ConsumerRecord) -> None:
        with contextlib.suppress(SchemaError):
            self.letters.append(read_dead_letter(rec.key, rec.value, rec.headers))


async def postings_ledger(
    settings: CommonSettings,
    window: Window,
    summarizer_version: str,
    idle_s: float = 1.0,
    timeout_s: float = 300.0,
) -> PostingsLedger:
    """Read the postings and dead-letter topics, then check Redis for the version's summaries."""
    from jobscore.cache import SummaryCache

    book = _PostingsBook(window)
    post_topic = topic_name(settings, POSTINGS)
    reads = await asyncio.gather(
        read_topic(settings, post_topic, book.on_posting, idle_s, timeout_s),
        read_topic(settings, topic_name(settings, DEAD_LETTERS), book.on_dead_letter, idle_s, timeout_s),
    )
    lettered_ids: set[str] = set()
    lettered_refs: set[RecordRef] = set()
    for dl in book.letters:
        if dl.topic != post_topic:
            continue
        try:
            lettered_ids.add(POSTINGS.decode(dl.original).job_id)
        except SchemaError:
            lettered_refs.add(RecordRef(dl.topic, dl.partition, dl.offset))
    led = PostingsLedger(window=window.describe(), summarizer_version=summarizer_version, reads=list(reads))
    led.postings = len(book.latest)
    led.undecodable = len(book.undecodable)
    led.dead_lettered = sum(1 for ref in book.undecodable if ref in lettered_refs)
    ids = list(book.latest)
    cache = SummaryCache.from_url(settings.redis_url, summarizer_version)
    try:
        found: list[object] = []
        for i in range(0, len(ids), MGET_CHUNK):
            found += await cache.get_many(ids[i : i + MGET_CHUNK])
    finally:
        await cache.close()
    for job_id, rec in zip(ids, found, strict=True):
        latest = book.latest[job_id]
        if latest.posting.deleted:
            led.withdrawn += 1
            led.withdrawn_still_cached += isinstance(rec, SummaryRecord)
            continue
        led.live += 1
        if isinstance(rec, SummaryRecord):
            if rec.content_hash == content_hash(latest.posting):
                led.summarized += 1
            else:
                led.stale += 1
        elif job_id in lettered_ids or latest.ref in lettered_refs:
            led.dead_lettered += 1
        else:
            led.missing_ids.append(job_id)
    led.missing = len(led.missing_ids)
    return led


def _text(b: bytes | None) -> str | None:
    if not b:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None


def balanced(ledgers: Sequence[RequestLedger | PostingsLedger]) -> bool:
    """True when nothing is lost in any of the ledgers."""
    return all(led.lost == 0 for led in ledgers)
