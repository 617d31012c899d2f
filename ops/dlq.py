"""Dead-letter tools: list and show dead letters, and re-drive their originals after a fix.

A re-driven record is the dead letter's original key and value, sent back unchanged to the topic it came
from, with two headers: ``jobscore-redrive-attempt`` (1 for the first re-drive, counted on from the
failed record's own header) and ``jobscore-redrive-from`` (``dlq-topic:partition:offset``). The attempt of
a dead letter is read from its *source record* (the dead letter names its topic/partition/offset), so no
service has to copy headers: a record re-driven and dead-lettered again is seen at attempt n and sent at
n + 1, or skipped once n reaches the cap. Within one run a source record is re-driven at most once
(replays dead-letter the same record again: the copies share ``topic:partition:offset``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from jobscore.kafka import make_producer, topic_name, topic_reader
from jobscore.settings import CommonSettings
from schemas import DEAD_LETTERS, DeadLetter, SchemaError
from schemas.deadletters import read_dead_letter

ATTEMPT_HEADER = "jobscore-redrive-attempt"
FROM_HEADER = "jobscore-redrive-from"


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters a command applies to; every given field must match."""

    stage: str | None = None
    error_type: str | None = None
    since: float | None = None  # unix seconds, on the dead-letter record's timestamp
    until: float | None = None
    request_id: str | None = None  # matches the original's request_id (or its key)
    job_id: str | None = None  # matches the original's job_id, or a candidate of a request
    source_topic: str | None = None

    def matches(self, e: Entry) -> bool:
        d = e.letter
        if d is None:
            return not (self.stage or self.error_type or self.request_id or self.job_id or self.source_topic)
        if self.stage and d.stage != self.stage:
            return False
        if self.error_type and d.error_type != self.error_type:
            return False
        if self.source_topic and d.topic != self.source_topic:
            return False
        if self.since is not None and e.timestamp < self.since:
            return False
        if self.until is not None and e.timestamp > self.until:
            return False
        if self.request_id and self.request_id not in (e.request_id, e.key_text):
            return False
        return not (self.job_id and self.job_id not in (e.job_id, e.key_text) and self.job_id not in e.candidates)


@dataclass(frozen=True)
class Entry:
    """One record of the dead-letter topic, decoded as far as possible."""

    partition: int
    offset: int
    timestamp: float
    letter: DeadLetter | None
    error: str = ""  # why the dead letter itself could not be decoded
    original_json: dict[str, Any] | None = None

    @property
    def key_text(self) -> str | None:
        k = self.letter.key if self.letter else None
        try:
            return k.decode() if k is not None else None
        except UnicodeDecodeError:
            return None

    @property
    def original_text(self) -> str | None:
        """The original value as text when it is UTF-8 (JSON, mostly); None for binary."""
        if self.letter is None:
            return None
        try:
            return self.letter.original.decode()
        except UnicodeDecodeError:
            return None

    @property
    def request_id(self) -> str | None:
        v = (self.original_json or {}).get("request_id")
        return v if isinstance(v, str) else None

    @property
    def job_id(self) -> str | None:
        v = (self.original_json or {}).get("job_id")
        return v if isinstance(v, str) else None

    @property
    def candidates(self) -> list[str]:
        v = (self.original_json or {}).get("candidates")
        return [c for c in v if isinstance(c, str)] if isinstance(v, list) else []

    @property
    def truncated(self) -> bool:
        return bool(getattr(self.letter, "truncated", False))

    @property
    def source(self) -> tuple[str, int, int] | None:
        return (self.letter.topic, self.letter.partition, self.letter.offset) if self.letter else None

    def summary(self) -> dict[str, Any]:
        """The fields `dlq ls` shows, one line per dead letter."""
        d = self.letter
        return {
            "partition": self.partition,
            "offset": self.offset,
            "failed_at": round(d.failed_at if d and d.failed_at else self.timestamp, 3),
            "stage": d.stage if d else "?",
            "error_type": d.error_type if d else "undecodable",
            "source": f"{d.topic}[{d.partition}]@{d.offset}" if d else "",
            "id": self.request_id or self.job_id or self.key_text or "",
            "reason": d.reason if d else self.error,
        }

    def full(self) -> dict[str, Any]:
        """Everything `dlq show` prints: the letter, with the original decoded when it is text."""
        out: dict[str, Any] = {"partition": self.partition, "offset": self.offset, "timestamp": self.timestamp}
        d = self.letter
        if d is None:
            return out | {"error": self.error}
        import msgspec

        doc = msgspec.to_builtins(d)
        doc.pop("original", None)
        doc["key"] = self.key_text if d.key is not None else None
        text = self.original_text
        if self.original_json is not None:
            doc["original"] = self.original_json
        elif text is not None:
            doc["original_text"] = text
        else:
            doc["original_base64"] = msgspec.json.encode(d.original).decode().strip('"')
        return out | doc


def entry_of(rec: ConsumerRecord) -> Entry:
    ts = rec.timestamp / 1e3
    try:
        d = read_dead_letter(rec.key, rec.value, rec.headers)  # v2 (Connect's convention) or a v1 envelope
    except SchemaError as e:
        return Entry(rec.partition, rec.offset, ts, None, error=f"not a dead letter: {e.reason}")
    original_json = None
    try:
        parsed = json.loads(d.original)
        original_json = parsed if isinstance(parsed, dict) else None
    except (ValueError, UnicodeDecodeError):
        pass
    return Entry(rec.partition, rec.offset, ts, d, original_json=original_json)


async def read_entries(
    settings: CommonSettings, flt: DeadLetterFilter = DeadLetterFilter(), limit: int | None = None
) -> AsyncIterator[Entry]:
    """Every dead letter that matches, partition by partition in offset order, up to the topic's end."""
    topic = topic_name(settings, DEAD_LETTERS)
    n = 0
    async with topic_reader(settings, "dlq") as reader:
        tps = await reader.partitions(topic)
        bounds = await reader.bounds(tps)
        async for rec in reader.read(bounds):
            e = entry_of(rec)
            if flt.matches(e):
                yield e
                n += 1
                if limit is not None and n >= limit:
                    return


async def get_entry(settings: CommonSettings, partition: int, offset: int) -> Entry:
    topic = topic_name(settings, DEAD_LETTERS)
    async with topic_reader(settings, "dlq") as reader:
        tp = TopicPartition(topic, partition)
        (begin, end) = (await reader.bounds([tp]))[tp]
        if not begin <= offset < end:
            raise LookupError(f"{topic}[{partition}] holds offsets {begin}..{end - 1}; {offset} is not there")
        async for rec in reader.read({tp: (offset, offset + 1)}):
            return entry_of(rec)
    raise LookupError(f"{topic}[{partition}]@{offset} could not be read (compacted away?)")


@dataclass(frozen=True)
class Redriven:
    entry: Entry
    attempt: int
    topic: str
    source_headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class RedriveReport:
    sent: list[Redriven] = field(default_factory=list)
    over_cap: list[Entry] = field(default_factory=list)
    duplicates: list[Entry] = field(default_factory=list)  # same source record seen again in this run
    not_redrivable: list[tuple[Entry, str]] = field(default_factory=list)
    dry_run: bool = False


def _attempt_of(headers: Sequence[tuple[str, bytes]] | None) -> int:
    for k, v in headers or ():
        if k == ATTEMPT_HEADER:
            try:
                return int(v.decode())
            except (ValueError, UnicodeDecodeError):
                return 0
    return 0


Headers = list[tuple[str, bytes]]


async def _source_records(
    settings: CommonSettings, sources: set[tuple[str, int, int]]
) -> dict[tuple[str, int, int], tuple[int, Headers]]:
    """Per source record: the re-drive attempt it carries (0 without the header) and its other headers
    (kept on the re-driven copy: content type, schema tag, trace context). A record gone from its topic
    (retention) counts as attempt 0 with no headers."""
    out: dict[tuple[str, int, int], tuple[int, Headers]] = dict.fromkeys(sources, (0, []))
    if not sources:
        return out
    want: dict[TopicPartition, set[int]] = {}
    for t, p, o in sources:
        want.setdefault(TopicPartition(t, p), set()).add(o)
    async with topic_reader(settings, "dlq") as reader:
        for tp, offsets in want.items():
            # One range per partition from the lowest to the highest wanted offset: dead letters of one
            # incident sit close together.
            async for rec in reader.read({tp: (min(offsets), max(offsets) + 1)}):
                if rec.offset in offsets:
                    kept = [(k, v) for k, v in rec.headers or () if k not in (ATTEMPT_HEADER, FROM_HEADER)]
                    out[(tp.topic, tp.partition, rec.offset)] = (_attempt_of(rec.headers), kept)
    return out


async def redrive(
    settings: CommonSettings,
    flt: DeadLetterFilter,
    max_attempts: int = 3,
    dry_run: bool = False,
    limit: int | None = None,
) -> RedriveReport:
    """Send matching dead letters' originals back to their source topics (see the module docstring)."""
    report = RedriveReport(dry_run=dry_run)
    picked: list[Entry] = []
    seen: set[tuple[str, int, int]] = set()
    async for e in read_entries(settings, flt):
        src = e.source
        if src is None:
            report.not_redrivable.append((e, e.error))
            continue
        if src in seen:
            report.duplicates.append(e)
            continue
        seen.add(src)
        if e.truncated:
            report.not_redrivable.append((e, "the original was cut to fit the dead-letter topic"))
            continue
        picked.append(e)
        if limit is not None and len(picked) >= limit:
            break
    sources = await _source_records(settings, {e.source for e in picked if e.source})
    todo: list[Redriven] = []
    for e in picked:
        assert e.source is not None and e.letter is not None
        attempt, headers = sources[e.source]
        if attempt + 1 > max_attempts:
            report.over_cap.append(e)
        else:
            todo.append(Redriven(e, attempt + 1, e.letter.topic, headers))
    if dry_run or not todo:
        report.sent = todo
        return report
    dlq = topic_name(settings, DEAD_LETTERS)
    producer = make_producer(settings)
    await producer.start()
    try:
        futs = []
        for r in todo:
            d = r.entry.letter
            assert d is not None
            headers = [
                *r.source_headers,
                (ATTEMPT_HEADER, str(r.attempt).encode()),
                (FROM_HEADER, f"{dlq}:{r.entry.partition}:{r.entry.offset}".encode()),
            ]
            # Back to the partition it came from: the key's partition when keyed, and for unkeyed records
            # the only place its neighbours' order was defined (partitions are never removed).
            futs.append(await producer.send(r.topic, d.original, key=d.key, headers=headers, partition=d.partition))
        await asyncio.gather(*futs)
    finally:
        await producer.stop()
    report.sent = todo
    return report
