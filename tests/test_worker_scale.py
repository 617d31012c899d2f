"""Production-grade worker behaviour: token prompts, backpressure, consumer groups, SIGTERM, model checks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.corpus import postings, queries
from engine.engines import HfEngine, ModelCapabilityError, inspect_model
from engine.prompt import PromptBuilder, PromptTemplate
from jobscore.client import RankingWaiter, new_request, publish_requests
from jobscore.settings import CommonSettings, WorkerSettings
from summarizer.writer import build_records
from tests.conftest import WAIT_S, wait_until
from tests.test_worker import committed_offsets, next_offsets, running, seed
from worker.loop import Worker

pytestmark = pytest.mark.engine


def builder_for(engine: Any, layout: str = "query_first") -> PromptBuilder:
    return PromptBuilder(
        engine.tokenizer, PromptTemplate.qwen3_reranker(), max_model_len=1024, max_doc_tokens=512, layout=layout
    )


class TestTokenPrompts:
    def test_shared_prefix_plus_candidate_ids_equal_whole_prompt_ids(self, vllm_engine: Any) -> None:
        b = builder_for(vllm_engine)
        recs = build_records(postings(20, seed=21, paragraphs=2), "v", 128)
        for q, r in zip(queries(20, seed=21), recs, strict=True):
            ids = b.build(b.query_ids(q), b.doc_ids([(r.job_id, r.content_hash)], [r.summary])[0])
            whole = vllm_engine.tokenizer(b.render(q, r.summary), add_special_tokens=False)["input_ids"]
            assert ids == list(whole)

    def test_token_prompts_score_like_text_prompts_and_hf(self, vllm_engine: Any, tiny_model: Path) -> None:
        b = builder_for(vllm_engine)
        recs = build_records(postings(16, seed=22, paragraphs=2), "v", 128)
        qs = queries(16, seed=22)
        pairs = list(zip(qs, recs, strict=True))
        ids = [b.build(b.query_ids(q), b.doc_ids([(r.job_id, "h")], [r.summary])[0]) for q, r in pairs]
        texts = [b.render(q, r.summary) for q, r in zip(qs, recs, strict=True)]
        by_ids = vllm_engine.score_tokens(ids)
        assert by_ids == pytest.approx(vllm_engine.score(texts), abs=1e-5)
        assert by_ids == pytest.approx(HfEngine(tiny_model).score_tokens(ids), abs=1e-4)

    def test_long_candidate_is_truncated_to_fit_model_len(self, vllm_engine: Any) -> None:
        b = PromptBuilder(vllm_engine.tokenizer, PromptTemplate.qwen3_reranker(), max_model_len=160, max_doc_tokens=512)
        qids = b.query_ids("python developer")
        doc = b.doc_ids([("j", "h")], ["word " * 2000])[0]
        prompt = b.build(qids, doc)
        assert len(prompt) == 160 and prompt[: len(qids)] == qids and prompt[-len(b.suffix_ids) :] == b.suffix_ids
        assert vllm_engine.score_tokens([prompt])[0] == pytest.approx(vllm_engine.score_tokens([prompt])[0])


class TestFlowControl:
    async def test_backpressure_pauses_and_resumes_without_loss(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_queued_items=8, max_batch_items=4, max_records=5)
        items = postings(6, seed=23, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [new_request(q, [p.job_id for p in items], top_k=1) for q in queries(30, seed=23)]
        worker = Worker(ws, vllm_engine)
        async with running(worker), RankingWaiter(ws) as waiter:
            await publish_requests(ws, reqs)
            rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
            await wait_until(lambda: not worker._paused, what="partitions resumed")
            assert worker.consumer is not None and not worker.consumer.paused()
        assert worker.pauses >= 1, "30 requests × 6 candidates must exceed a queue of 8 items"
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


class TestSigterm:
    async def test_sigterm_mid_stream_loses_nothing(
        self, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(max_records=2, max_batch_items=8, max_queued_items=16)
        items = postings(8, seed=25, prefix=f"{ws.group_id}-job")
        await seed(ws, items)
        reqs = [new_request(q, [p.job_id for p in items], top_k=2) for q in queries(60, seed=25)]
        env = {
            **os.environ,
            **{f"JOBSCORE_{k.upper()}": str(v) for k, v in json.loads(ws.model_dump_json()).items() if v is not None},
        }
        env.update({"JOBSCORE_DTYPE": "float32", "JOBSCORE_MAX_MODEL_LEN": "1024"})
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            async with RankingWaiter(ws) as waiter:
                await publish_requests(ws, reqs)
                await wait_until(lambda: len(waiter.rankings) >= 3, timeout=240, what="the worker process to answer")
                proc.send_signal(signal.SIGTERM)
                rc = await asyncio.to_thread(proc.wait, WAIT_S)
                answered_by_process = len(waiter.rankings)
                committed = await committed_offsets(ws)
                # Whatever it committed, it had answered: a stop never commits ahead of the answers.
                assert sum(v or 0 for v in committed.values()) <= answered_by_process
                async with running(Worker(ws, vllm_engine)):
                    rankings = await waiter.wait_all([r.request_id for r in reqs], WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            out = proc.stdout.read() if proc.stdout else ""
        assert rc == 0, out[-3000:]
        assert "signal received" in out
        assert set(rankings) == {r.request_id for r in reqs}
        assert await committed_offsets(ws) == await next_offsets(ws, len(reqs))


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
