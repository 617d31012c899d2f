"""Bulk scoring of (query, job) pairs from a file into a results file, resumable (`jobscore score-backfill`).

Input (JSONL or Parquet), one row per query: ``query``, ``job_ids`` (list) or ``job_id`` (one), optional
``query_id`` (default: a hash of the query). Every row is cut into *units* of at most ``chunk`` job ids;
a unit is one `ScoreRequest` with a deterministic id (``bf-<run>-<row>-<chunk>``), published to the bulk
lane, its ranking turned into one output row per pair.

Resume: finished units are appended to a journal (``<out>.journal.jsonl``), one JSON line per unit,
flushed and fsynced before the next line. A run killed at any point leaves only whole lines (a torn last
line is ignored on read); the next run skips the units in the journal, so the output has every pair once.
The output file is written from the journal at the end. The journal's first line names the input and the
chunking; a journal for another input is refused (delete it, or pass another --out).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from schemas import Ranking, ScoreRequest

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = (
    "query_id",
    "job_id",
    "score",
    "error",
    "model_id",
    "model_revision",
    "summarizer_version",
)


class BackfillError(ValueError):
    """The input or the journal cannot be used; the message says what to fix."""


class Unit(msgspec.Struct, frozen=True):
    """One request's worth of pairs: row ``row``'s job ids ``[start, start + len(job_ids))``."""

    index: int
    query_id: str
    query: str
    job_ids: list[str]


class OutRow(msgspec.Struct, frozen=True, kw_only=True):
    query_id: str
    job_id: str
    score: float | None
    error: str | None
    model_id: str
    model_revision: str
    summarizer_version: str


class JournalLine(msgspec.Struct, frozen=True):
    unit: int
    rows: list[OutRow]
    dead_letter: str | None = None


class JournalHead(msgspec.Struct, frozen=True):
    input: str
    input_size: int
    chunk: int


def query_id_of(query: str) -> str:
    return "q-" + hashlib.sha1(query.encode()).hexdigest()[:16]


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        with path.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise BackfillError(f"{path}:{n}: not JSON: {e}") from None
    else:
        raise BackfillError(f"{path}: expected .jsonl or .parquet")


def units_of(path: Path, chunk: int) -> list[Unit]:
    """Every unit of the input, in order (index = position; stable across runs on the same input)."""
    units: list[Unit] = []
    for n, row in enumerate(read_rows(path), 1):
        query = row.get("query")
        ids = row.get("job_ids")
        if ids is None and row.get("job_id") is not None:
            ids = [row["job_id"]]
        if not isinstance(query, str) or not query or not ids:
            raise BackfillError(f"{path} row {n}: needs `query` and `job_ids` (list) or `job_id`")
        qid = str(row.get("query_id") or query_id_of(query))
        ids = [str(j) for j in dict.fromkeys(ids)]
        for start in range(0, len(ids), chunk):
            units.append(Unit(len(units), qid, query, ids[start : start + chunk]))
    return units


def rows_of(unit: Unit, ranking: Ranking) -> list[OutRow]:
    """One row per pair of the unit: its score, or the reason it has none."""
    scores = {r.job_id: r.score for r in ranking.results}
    errors = {e.job_id: e.reason for e in ranking.errors}
    status_error = None if ranking.status == "ok" else ranking.status
    return [
        OutRow(
            query_id=unit.query_id,
            job_id=j,
            score=scores.get(j),
            error=None if j in scores else (errors.get(j) or status_error or "not_scored"),
            model_id=ranking.model_id,
            model_revision=ranking.model_revision,
            summarizer_version=ranking.summarizer_version,
        )
        for j in unit.job_ids
    ]


def dead_rows(unit: Unit, error: str) -> list[OutRow]:
    return [
        OutRow(
            query_id=unit.query_id,
            job_id=j,
            score=None,
            error=error,
            model_id="",
            model_revision="",
            summarizer_version="",
        )
        for j in unit.job_ids
    ]


class Journal:
    """Append-only record of finished units (module docstring)."""

    def __init__(self, path: Path, head: JournalHead) -> None:
        self.path = path
        self.head = head
        self.done: dict[int, JournalLine] = {}
        if path.exists():
            self._load()
        self._f = path.open("ab")
        if not self.done and path.stat().st_size == 0:
            self._write(msgspec.json.encode(head))

    def _load(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        try:
            head = msgspec.json.decode(lines[0], type=JournalHead)
        except msgspec.DecodeError:
            self.path.unlink()  # killed before the head was whole: nothing recorded yet
            return
        if head != self.head:
            raise BackfillError(
                f"{self.path} belongs to another run ({head}); delete it or choose another --out to start afresh"
            )
        good = 1
        for i, line in enumerate(lines[1:], 1):
            if not line:
                continue
            try:
                jl = msgspec.json.decode(line, type=JournalLine)
            except msgspec.DecodeError:
                break  # a torn last line from a killed run: that unit is simply done again
            self.done[jl.unit] = jl
            good = i + 1
        # Cut a torn tail so new lines start on a line of their own.
        keep = b"\n".join(lines[:good]) + b"\n"
        if keep != self.path.read_bytes():
            self.path.write_bytes(keep)

    def _write(self, data: bytes) -> None:
        self._f.write(data + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def record(self, line: JournalLine) -> None:
        self._write(msgspec.json.encode(line))
        self.done[line.unit] = line

    def close(self) -> None:
        self._f.close()


@dataclass
class Report:
    pairs: int = 0
    scored: int = 0
    missing_summaries: int = 0
    other_errors: int = 0
    dead_letters: int = 0
    resumed_units: int = 0
    duration_s: float = 0.0
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def render(self) -> str:
        rate = self.pairs / self.duration_s if self.duration_s else 0.0
        return (
            f"pairs: {self.pairs}  scored: {self.scored}  missing summaries: {self.missing_summaries}  "
            f"other errors: {self.other_errors}  dead letters: {self.dead_letters}  "
            f"resumed units: {self.resumed_units}  duration: {self.duration_s:.1f}s ({rate:.1f} pairs/s)"
        )


def write_output(out: Path, journal: Journal, units: list[Unit]) -> Report:
    rows = [r for u in units for r in journal.done[u.index].rows]
    rep = Report(pairs=len(rows))
    for r in rows:
        if r.score is not None:
            rep.scored += 1
        elif r.error == "missing_summary":
            rep.missing_summaries += 1
        else:
            rep.other_errors += 1
        if r.error:
            rep.errors_by_kind[r.error] = rep.errors_by_kind.get(r.error, 0) + 1
    rep.dead_letters = sum(1 for u in units if journal.done[u.index].dead_letter)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {c: [getattr(r, c) for r in rows] for c in OUTPUT_COLUMNS}
        schema = pa.schema(
            [(c, pa.float64() if c == "score" else pa.string()) for c in OUTPUT_COLUMNS],
        )
        pq.write_table(pa.table(cols, schema=schema), tmp)
    else:
        with tmp.open("wb") as f:
            for r in rows:
                f.write(msgspec.json.encode(r) + b"\n")
    tmp.replace(out)  # the output appears whole or not at all
    return rep


async def run_backfill(
    input_path: Path,
    out: Path,
    score_units: Callable[[list[Unit]], AsyncIterator[JournalLine]],
    chunk: int,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> Report:
    """Score every unit not in the journal with ``score_units`` (yields finished units in any order),
    journal each, then write the output. ``on_start(total_pairs, already_done_pairs)`` sizes a progress bar."""
    t0 = time.monotonic()
    units = units_of(input_path, chunk)
    head = JournalHead(str(input_path.resolve()), input_path.stat().st_size, chunk)
    journal = Journal(out.with_name(out.name + ".journal.jsonl"), head)
    try:
        todo = [u for u in units if u.index not in journal.done]
        done_pairs = sum(len(u.job_ids) for u in units if u.index in journal.done)
        if on_start is not None:
            on_start(sum(len(u.job_ids) for u in units), done_pairs)
        log.info("backfill", extra={"units": len(units), "todo": len(todo), "resumed": len(units) - len(todo)})
        async for line in score_units(todo):
            journal.record(line)
            if progress is not None:
                progress(len(line.rows))
        rep = write_output(out, journal, units)
        rep.resumed_units = len(units) - len(todo)
    finally:
        journal.close()
    rep.duration_s = time.monotonic() - t0
    return rep


def chunks(items: Iterable[Unit], n: int) -> Iterator[list[Unit]]:
    batch: list[Unit] = []
    for it in items:
        batch.append(it)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


async def cluster_units(
    settings: Any, run_id: str, units: list[Unit], max_in_flight: int, timeout_s: float, attempts: int = 3
) -> AsyncIterator[JournalLine]:
    """Score units through the cluster's bulk lane with at most ``max_in_flight`` requests outstanding;
    yields each finished unit as its ranking (or dead letter) arrives."""
    from client import DeadLettered, ScoreTimeout, ScoringClient, ScoringError

    done: asyncio.Queue[JournalLine | BaseException] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)

    async def one(client: ScoringClient, unit: Unit) -> None:
        try:
            req = ScoreRequest(
                request_id=f"bf-{run_id}-{unit.index}",
                query=unit.query,
                candidates=unit.job_ids,
                top_k=len(unit.job_ids),
                created_at=time.time(),
            )
            for attempt in range(1, attempts + 1):
                # The same id every time: a late first answer is as good as the re-sent one's.
                await client.submit(req)
                try:
                    ranking = await client.result(req.request_id, timeout_s)
                    await done.put(JournalLine(unit.index, rows_of(unit, ranking)))
                    return
                except ScoreTimeout:
                    log.warning("backfill unit timed out; re-sending", extra={"unit": unit.index, "attempt": attempt})
                except DeadLettered as e:
                    await done.put(JournalLine(unit.index, dead_rows(unit, "dead_letter"), dead_letter=e.reason))
                    return
                except ScoringError as e:
                    status = type(e).__name__
                    await done.put(JournalLine(unit.index, dead_rows(unit, status)))
                    return
            raise TimeoutError(f"unit {unit.index}: no ranking after {attempts} tries of {timeout_s:g}s")
        except BaseException as e:
            await done.put(e)
        finally:
            slots.release()

    async with ScoringClient(settings, lane="bulk") as client:
        tasks: set[asyncio.Task[None]] = set()

        async def feed() -> None:
            for unit in units:
                await slots.acquire()  # bounded in-flight work: memory and broker load stay flat
                t = asyncio.create_task(one(client, unit))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        feeder = asyncio.create_task(feed())
        try:
            for _ in range(len(units)):
                item = await done.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            feeder.cancel()
            for t in list(tasks):
                t.cancel()
