"""Issue 18 finding 6: engine child processes die with the worker; start-up logs each step and obeys SIGTERM.

Real processes: a Python process that loads the real vLLM engine on the tiny model (then is ``kill -9``-ed),
and the real ``jobscore worker`` command pointed at a broker address that accepts connections but never
answers (a start-up that hangs, as on a sick broker), stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.engines import REAPER_POLL_S
from tests.conftest import WAIT_S
from tests.helpers import Lines, descendants

# Each test starts vLLM up to twice in a child process: minutes on two shared cores.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONPATH": str(ROOT),
}
LOAD_S = 480.0  # a vLLM start-up on two shared cores (compiles when its cache misses)

LOAD_AND_WAIT = """
import json, sys, time
from engine.engines import VllmEngine

if __name__ == "__main__":  # vLLM spawns its engine process: the main module must be importable
    # As conftest, but eager (no compile warm-up): what is killed here is the processes, not the kernels.
    engine = VllmEngine(sys.argv[1], dtype="float32", max_model_len=1024, max_num_seqs=128, enforce_eager=True)
    print("ENGINE-PIDS", json.dumps(engine.pids), flush=True)
    time.sleep(3600)
"""


def assert_all_exit(procs: list[psutil.Process], what: str) -> None:
    _, alive = psutil.wait_procs(procs, timeout=60)
    assert not alive, f"{what}: still running {[(p.pid, p.name()) for p in alive]}"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An address that accepts TCP connections and never answers (a hung broker)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


def test_kill_9_of_the_worker_process_kills_its_engine_processes(tiny_model: Path, tmp_path: Path) -> None:
    script = tmp_path / "load_and_wait.py"
    script.write_text(LOAD_AND_WAIT)

    def start() -> tuple[subprocess.Popen[str], Lines]:
        p = subprocess.Popen(
            [sys.executable, str(script), str(tiny_model)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return p, Lines(p.stdout)

    # 1. Killed while vLLM is still starting its engine processes.
    proc, _ = start()
    try:
        deadline = time.monotonic() + LOAD_S
        while not any("VLLM" in c.name() for c in descendants(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2 * REAPER_POLL_S)  # the reaper's recording period: it has seen them by now
        children = [c for c in descendants(proc.pid) if "VLLM" in c.name()]
        assert children, "vLLM started no engine process"
        proc.kill()
        proc.wait(timeout=WAIT_S)
        assert_all_exit(children, "engine processes after kill -9 of their parent during the engine load")
    finally:
        if proc.poll() is None:
            proc.kill()

    # 2. Killed while serving (the engine loaded).
    proc, lines = start()
    try:
        pids = json.loads(lines.wait_for("ENGINE-PIDS", LOAD_S).split(" ", 1)[1])
        children = [psutil.Process(p) for p in pids]
        assert any("VLLM" in c.name() for c in children), [c.name() for c in children]
        proc.kill()  # SIGKILL: no cleanup code runs in the worker
        proc.wait(timeout=WAIT_S)
        assert_all_exit(children, "engine processes after kill -9 of their parent")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_during_startup_steps_exits_promptly_without_leftovers(
    tiny_model: Path, black_hole: str, redis_url: str
) -> None:
    def start() -> tuple[subprocess.Popen[str], Lines]:
        flags = ["--model", str(tiny_model), "--dtype", "float32", "--max-model-len", "1024"]
        flags += ["--kafka-bootstrap", black_hole, "--redis-url", redis_url]
        p = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", *flags],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return p, Lines(p.stderr)

    # 1. While the broker does not answer: every step before it is logged, SIGTERM ends the start-up.
    proc, lines = start()
    try:
        lines.wait_for("start-up: loading the engine", LOAD_S)
        lines.wait_for("start-up: ensuring topics", LOAD_S)
        children = descendants(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=WAIT_S)
        assert time.monotonic() - t0 < 30, "the first SIGTERM ends a hung start-up"
        assert rc == 0, rc
        assert_all_exit(children, "engine processes after SIGTERM during start-up")
    finally:
        if proc.poll() is None:
            proc.kill()

    # 2. While the engine loads: the load is interrupted and the half-started engine processes are killed.
    proc, lines = start()
    try:
        lines.wait_for("start-up: loading the engine", LOAD_S)
        deadline = time.monotonic() + LOAD_S
        while not any("VLLM" in c.name() for c in descendants(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        children = descendants(proc.pid)
        assert children, "the engine started no process"
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=WAIT_S)
        assert rc == 130, rc
        assert_all_exit(children, "engine processes after SIGTERM during the engine load")
    finally:
        if proc.poll() is None:
            proc.kill()
