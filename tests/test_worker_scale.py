"""Production-grade worker behaviour: token prompts, backpressure, consumer groups, SIGTERM, model checks."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import pytest
from aiokafka import TopicPartition

from client import RankingWaiter, new_request, publish_requests
from engine.corpus import postings, queries
from engine.engines import ModelCapabilityError, inspect_model
from engine.prompt import PromptBuilder, PromptTemplate
from jobscore.settings import CommonSettings, WorkerSettings, settings_env
from ops.devstack import free_port
from summarizer.writer import build_records
from tests.conftest import WAIT_S, queued_items, wait_until
from tests.helpers import GatedEngine, Lines, committed_offsets, descendants, next_offsets, running, seed
from worker.loop import Worker

pytestmark = pytest.mark.engine


def builder_for(engine: Any, layout: str = "query_first") -> PromptBuilder:
    return PromptBuilder(
        engine.tokenizer, PromptTemplate.qwen3_reranker(), max_model_len=1024, max_doc_tokens=512, layout=layout
    )


class _Step(NamedTuple):
    queued: int
    paused_before: bool
    paused_after: bool
    consumer_paused: bool


class _Recording(Worker):
    """The real worker, recording each backpressure decision and what each revoke found in flight."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.backpressure_steps: list[_Step] = []
        self.revoked_in_flight: list[int] = []
        self.answered_during_revoke: list[int] = []
        self.before_revoke: Callable[[], object] | None = None  # called once a revoke's in-flight is counted

    def _backpressure(self) -> None:
        queued, before = len(self.batcher), self._paused
        super()._backpressure()
        assert self.consumer is not None
        # The online lane's partitions (the bulk lane pauses earlier and resumes later by design).
        online = {tp for tp in self.consumer.assignment() if tp.topic == self.settings.topic_requests}
        paused = bool(online) and online <= self.consumer.paused()
        self.backpressure_steps.append(_Step(queued, before, self._paused, paused))

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        in_flight, done_before = self.offsets.in_flight(revoked), self.requests_done
        if revoked and self.before_revoke is not None:
            self.before_revoke()
        await super()._on_revoked(revoked)
        if revoked:  # the first join calls the listener with nothing revoked
            self.revoked_in_flight.append(in_flight)
            self.answered_during_revoke.append(self.requests_done - done_before)


class TestTokenPrompts:
    def test_shared_prefix_plus_candidate_ids_equal_whole_prompt_ids(self, vllm_engine: Any) -> None:
        b = builder_for(vllm_engine)
        recs = build_records(postings(20, seed=21, paragraphs=2), "v", 128)
        for q, r in zip(queries(20, seed=21), recs, strict=True):
            ids = b.build(b.query_ids(q), b.doc_ids([(r.job_id, r.content_hash)], [r.summary])[0])
            whole = vllm_engine.tokenizer(b.render(q, r.summary), add_special_tokens=False)["input_ids"]
            assert ids == list(whole)

    def test_token_prompts_score_like_text_prompts_and_hf(self, vllm_engine: Any, hf_engine: Any) -> None:
        b = builder_for(vllm_engine)
        recs = build_records(postings(16, seed=22, paragraphs=2), "v", 128)
        qs = queries(16, seed=22)
        pairs = list(zip(qs, recs, strict=True))
        ids = [b.build(b.query_ids(q), b.doc_ids([(r.job_id, "h")], [r.summary])[0]) for q, r in pairs]
        texts = [b.render(q, r.summary) for q, r in zip(qs, recs, strict=True)]
        by_ids = vllm_engine.score_tokens(ids)
        assert by_ids == pytest.approx(vllm_engine.score(texts), abs=1e-5)
        assert by_ids == pytest.approx(hf_engine.score_tokens(ids), abs=1e-4)

    def test_long_candidate_is_truncated_to_fit_model_len(self, vllm_engine: Any) -> None:
        b = PromptBuilder(vllm_engine.tokenizer, PromptTemplate.qwen3_reranker(), max_model_len=160, max_doc_tokens=512)
        qids = b.query_ids("python developer")
        doc = b.doc_ids([("j", "h")], ["word " * 2000])[0]
        prompt = b.build(qids, doc)
        assert len(prompt) == 160 and prompt[: len(qids)] == qids and prompt[-len(b.suffix_ids) :] == b.suffix_ids
        # The cut is the document's tail: its kept part is the document's first tokens, unchanged.
        assert prompt[len(qids) : -len(b.suffix_ids)] == doc[: 160 - len(qids) - len(b.suffix_ids)]
        # The engine accepts the full-length prompt (one over max_model_len it would refuse).
        assert 0.0 <= vllm_engine.score_tokens([prompt])[0] <= 1.0


class TestFlowControl:
    async def test_backpressure_pauses_at_max_queued_items_and_resumes_at_half(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_queued_items=8, max_batch_items=4, max_records=5)
        items = postings(6, seed=23, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [new_request(q, [p.job_id for p in items], top_k=1) for q in queries(30, seed=23)]
        worker = _Recording(ws, vllm_engine)
        async with running(worker), RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs)
            rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
            await wait_until(lambda: not worker._paused, what="partitions resumed")
            assert worker.consumer is not None
            assert not {tp for tp in worker.consumer.paused() if tp.topic == ws.topic_requests}
        limit = ws.max_queued_items
        steps = worker.backpressure_steps
        # Every decision follows the rule exactly: pause at >= limit, stay paused above half, resume at half.
        for st in steps:
            if not st.paused_before:
                assert st.paused_after == (st.queued >= limit), st
            else:
                assert st.paused_after == (st.queued > limit // 2), st
            assert st.consumer_paused == st.paused_after, st
        pauses = [st for st in steps if st.paused_after and not st.paused_before]
        resumes = [st for st in steps if st.paused_before and not st.paused_after]
        assert pauses and resumes, "30 requests × 6 candidates must exceed a queue of 8 items and drain again"
        assert worker.pauses == len(pauses)
        assert len(rankings) == 30 and all(r.status == "ok" for r in rankings.values())

    async def test_two_workers_in_one_group_split_partitions_one_ranking_each(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings()
        items = postings(5, seed=24, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        a, b = Worker(ws, vllm_engine), Worker(ws, vllm_engine)
        async with running(a), running(b), RankingWaiter(ws) as waiter:

            def split() -> bool:
                pa = a.consumer.assignment() if a.consumer else set()
                pb = b.consumer.assignment() if b.consumer else set()
                return bool(pa) and bool(pb) and not (pa & pb)

            await wait_until(split, what="both workers to own disjoint partitions")
            reqs = [new_request(q, [p.job_id for p in items], top_k=2) for q in queries(40, seed=24)]
            await publish_requests(ws, reqs)
            rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        assert a.requests_done > 0 and b.requests_done > 0, "both partitions' owners answer"
        assert set(rankings) == {r.request_id for r in reqs}
        # After dedup by request id each request has exactly one ranking; a stable group answers once.
        assert waiter.duplicates == 0 and a.requests_done + b.requests_done == len(reqs)
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))

    async def test_second_worker_joining_while_work_is_in_flight_loses_and_repeats_nothing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_records=2, max_batch_items=4, max_queued_items=8)
        items = postings(6, seed=26, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [new_request(q, [p.job_id for p in items], top_k=2) for q in queries(60, seed=26)]
        # a's engine behind a gate: shut while b joins, so the revoke finds work in flight whatever the host's
        # speed (a fast engine used to finish everything during tansu's ~session_timeout/2 join hold), and
        # opened by the revoke, so a's drain scores it before handing the partitions over.
        gated = GatedEngine(vllm_engine)
        gated.gate.set()
        a, b = _Recording(ws, gated), _Recording(ws, vllm_engine)
        a.before_revoke = gated.gate.set
        async with RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs)
            async with running(a):
                await wait_until(lambda: a.requests_done >= 2, what="the first worker to answer")
                gated.shut()
                await wait_until(
                    lambda: gated.waiting.is_set() and a.offsets.in_flight() > 0,
                    what="the first worker to hold queued requests at its shut engine",
                )
                async with running(b):  # b joins: a's partitions are revoked while its work is in flight
                    rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        assert a.revoked_in_flight and a.revoked_in_flight[0] > 0, "the revoke found work in flight"
        # ...and finished it before handing the partitions over (not dropped for the next owner to redo).
        assert all(d >= n for d, n in zip(a.answered_during_revoke, a.revoked_in_flight, strict=True))
        assert set(rankings) == {r.request_id for r in reqs}
        # The revoke drained and committed a's work, so nothing was answered twice. (How many b answers depends
        # on how long the group join takes — tansu holds it ~session_timeout/2 while a keeps working — so it
        # may be none: the property is about the hand-over, which the revoke assertions above check.)
        assert a.requests_done + b.requests_done == len(reqs) and waiter.duplicates == 0
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))


# A worker process loads its own engine: ~30 s on an idle 2-core host, minutes when the host is shared.
STARTUP_S = 420


class TestSigterm:
    @pytest.mark.timeout(STARTUP_S + 300)
    async def test_sigterm_mid_stream_loses_nothing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        # Its metrics port: the test sees the worker's queue there while the engine is frozen.
        port = free_port()
        ws = worker_settings(max_records=2, max_batch_items=8, max_queued_items=16, metrics_port=port)
        items = postings(8, seed=25, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [new_request(q, [p.job_id for p in items], top_k=2) for q in queries(60, seed=25)]
        # The tiny model, as the in-process engine: the default (the shipped scorer) is for users, not plumbing.
        env = settings_env(
            ws, JOBSCORE_MODEL=vllm_engine.info.path, JOBSCORE_DTYPE="float32", JOBSCORE_MAX_MODEL_LEN="1024"
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = Lines(proc.stdout)
        frozen: list[psutil.Process] = []
        try:
            async with RankingWaiter(ws) as waiter:
                await publish_requests(ws, reqs)
                try:
                    await wait_until(
                        lambda: len(waiter.rankings) >= 3, timeout=STARTUP_S, what="the worker process to answer"
                    )
                except AssertionError:
                    proc.kill()
                    raise AssertionError(lines.all(WAIT_S)[-3000:]) from None
                # The signal must land with work in flight, whatever the host's speed: a fast engine empties
                # the queue between polls, and a signal sent then tests nothing (a clean-clone run saw it).
                # Freeze vLLM's engine processes, wait until the worker has queued work for them, signal,
                # and let the engine go on only once the worker has taken the signal in.
                frozen = [c for c in descendants(proc.pid) if "VLLM" in c.name()]
                assert frozen, "the worker process started no vLLM engine process"
                for c in frozen:
                    c.suspend()
                await wait_until(lambda: queued_items(port) > 0, what="the worker to queue work for its frozen engine")
                signalled_at = time.time()
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(lines.wait_for, "signal received", WAIT_S)
                for c in frozen:
                    c.resume()
                frozen = []
                rc = await asyncio.to_thread(proc.wait, WAIT_S)
                out = lines.all(WAIT_S)
                stopped = re.search(r"worker stopped.*\brequests=(\d+)", out)
                assert rc == 0 and stopped, out[-3000:]
                done_by_process = int(stopped.group(1))
                await wait_until(
                    lambda: len(waiter.rankings) >= done_by_process, what="the process's rankings to arrive"
                )
                by_process = dict(waiter.rankings)
                committed = await committed_offsets(ws)
                async with running(Worker(ws, vllm_engine)):
                    rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        finally:
            for c in frozen:
                with contextlib.suppress(psutil.Error):
                    c.resume()
            if proc.poll() is None:
                proc.kill()
        assert "signal received" in out
        # Nothing it consumed was left behind: the drain ended because the queue emptied, not at its timeout.
        assert "drain timed out" not in out, out[-3000:]
        # The signal arrived mid-stream: work was in flight, and the process finished it after the signal...
        assert len(by_process) == done_by_process < len(reqs)
        assert any(r.produced_at > signalled_at for r in by_process.values()), "nothing was finished after the signal"
        # ...and committed everything it answered, so the next worker answered only the rest.
        assert sum(v or 0 for v in committed.values()) == done_by_process
        assert set(rankings) == {r.request_id for r in reqs} and waiter.duplicates == 0
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))


_SIGNAL_SCRIPT = """
import asyncio, sys
from app.commands import run_until_signal
stuck = sys.argv[1] == "stuck"

async def main(stop: asyncio.Event) -> int:
    print("ready", flush=True)
    await stop.wait()
    print("stopping", flush=True)
    if stuck:  # a drain that never finishes: only a second signal ends it
        await asyncio.Event().wait()
    print("drained", flush=True)
    return 0

sys.exit(run_until_signal(main))
"""


class TestSignals:
    def _start(self, mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGNAL_SCRIPT, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"  # handlers are installed before main runs
        return proc

    def test_sigint_stops_gracefully_with_exit_code_zero(self) -> None:
        proc = self._start("graceful")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, out
        assert "stopping" in out and "drained" in out  # main ran to its end: the stop was graceful

    def test_second_signal_aborts_a_stuck_drain_with_130(self) -> None:
        proc = self._start("stuck")
        assert proc.stdout is not None
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "stopping"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 130, out
        assert "drained" not in out and "second signal: aborting" in out


class TestModelChecks:
    def test_model_without_single_yes_no_tokens_is_refused(self, tiny_model: Path, tmp_path: Path) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train_from_iterator(["python developer berlin"], trainer=trainer)  # never sees "yes"
        PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path)
        (tmp_path / "config.json").write_text((tiny_model / "config.json").read_text())
        with pytest.raises(ModelCapabilityError, match=r"'(no|yes)' is not a single token"):
            inspect_model(tmp_path)

    def test_ranking_carries_model_identity(self, vllm_engine: Any, tiny_model: Path) -> None:
        info = inspect_model(tiny_model)
        assert info.model_id == "tiny-qwen3" and info.revision == tiny_model.name
        assert vllm_engine.info == info
