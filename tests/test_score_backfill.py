"""`jobscore score-backfill`: a run SIGKILLed after its checkpoint advanced, then resumed, writes every pair
exactly once (cluster mode: a real worker on the tiny model serves the bulk lane); --direct scores the same
pairs in-process with the same prompt and engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from app.backfill_cmds import direct_units
from engine.corpus import postings, queries
from jobscore.settings import CommonSettings, WorkerSettings
from ops.backfill import Journal, JournalHead, run_backfill, units_of
from tests.conftest import WAIT_S, wait_until
from tests.helpers import running, seed
from worker.loop import Worker

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 2


def journal_units(path: Path) -> int:
    """Whole unit lines in a journal (the head line excluded)."""
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if line.startswith(b'{"unit"') and line.endswith(b"}"))


async def backfill_process(ws: WorkerSettings, src: Path, out: Path) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "JOBSCORE_KAFKA_BOOTSTRAP": ws.kafka_bootstrap,
        "JOBSCORE_REDIS_URL": ws.redis_url.get_secret_value(),
        "JOBSCORE_TOPIC_REQUESTS": ws.topic_requests,
        "JOBSCORE_TOPIC_REQUESTS_BULK": ws.topic_requests_bulk,
        "JOBSCORE_TOPIC_RANKINGS": ws.topic_rankings,
        "JOBSCORE_TOPIC_DEAD_LETTERS": ws.topic_dead_letters,
    }
    args = [str(src), "--out", str(out), "--chunk", str(CHUNK), "--max-in-flight", "1", "--no-progress"]
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "jobscore"),
        "score-backfill",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


@pytest.mark.engine
async def test_backfill_killed_midway_resumes_to_exactly_the_expected_rows_and_direct_agrees(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings, tmp_path: Path
) -> None:
    ws = worker_settings()
    jobs = postings(6, seed=41, prefix=f"{ws.group_id}-job")
    await seed(ws, jobs)
    ids = [p.job_id for p in jobs] + ["never-posted"]
    src = tmp_path / "pairs.jsonl"
    rows = [
        {"query": q, "job_ids": ids[i % 3 : i % 3 + 4], "query_id": f"q{i}"} for i, q in enumerate(queries(60, seed=41))
    ]
    rows.append({"query": "nurse", "job_id": "never-posted"})  # the one-pair form, a missing summary
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    units = units_of(src, CHUNK)
    expected = {(u.query_id, j) for u in units for j in u.job_ids}
    out = tmp_path / "results.parquet"
    journal = out.with_name(out.name + ".journal.jsonl")

    async with running(Worker(ws, vllm_engine)):
        first = await backfill_process(ws, src, out)
        await wait_until(lambda: journal_units(journal) >= 5, what="the checkpoint to advance")
        first.send_signal(signal.SIGKILL)
        await first.wait()
        done_at_kill = journal_units(journal)
        assert 5 <= done_at_kill < len(units), "the kill must land mid-way"
        assert not out.exists()
        second = await backfill_process(ws, src, out)
        output, _ = await asyncio.wait_for(second.communicate(), WAIT_S * 2)
    text = output.decode()
    assert second.returncode == 0, text
    table = pq.read_table(out).to_pylist()
    got = [(r["query_id"], r["job_id"]) for r in table]
    assert len(got) == len(set(got)) == len(expected), "duplicate or missing rows after the resume"
    assert set(got) == expected
    for r in table:
        if r["job_id"] == "never-posted":
            assert r["score"] is None and r["error"] == "missing_summary"
        else:
            assert 0.0 <= r["score"] <= 1.0 and r["error"] is None
            assert r["model_id"] == vllm_engine.info.model_id and r["summarizer_version"] == ws.summarizer_version
    assert f"pairs: {len(expected)}" in text and "missing summaries: " in text
    resumed = int(text.split("resumed units: ")[1].split()[0])
    assert resumed >= done_at_kill

    # --direct: the same pairs in-process through the same prompt path give the same scores.
    direct_out = tmp_path / "direct.jsonl"
    report = await run_backfill(src, direct_out, lambda us: direct_units(ws, vllm_engine, us), CHUNK)
    direct = {(r["query_id"], r["job_id"]): r for r in map(json.loads, direct_out.read_text().splitlines())}
    assert set(direct) == expected and report.pairs == len(expected)
    for r in table:
        d = direct[(r["query_id"], r["job_id"])]
        assert (d["score"] is None) == (r["score"] is None)
        if r["score"] is not None:
            assert d["score"] == pytest.approx(r["score"], abs=1e-4)


def test_journal_ignores_a_torn_last_line_and_refuses_another_input(tmp_path: Path) -> None:
    head = JournalHead("/in.jsonl", 10, 2)
    path = tmp_path / "j.jsonl"
    j = Journal(path, head)
    from ops.backfill import JournalLine

    j.record(JournalLine(0, []))
    j.record(JournalLine(1, []))
    j.close()
    with path.open("ab") as f:
        f.write(b'{"unit":2,"rows":[{"query_id":"q"')  # killed mid-write
    j = Journal(path, head)
    assert sorted(j.done) == [0, 1]
    j.record(JournalLine(2, []))
    j.close()
    assert sorted(Journal(path, head).done) == [0, 1, 2]
    with pytest.raises(ValueError, match="another run"):
        Journal(path, JournalHead("/other.jsonl", 10, 2))
