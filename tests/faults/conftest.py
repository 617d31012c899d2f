"""The fault suite's helpers: services the scenarios break on purpose, worker processes to kill, and the ledger
printed at the end of every scenario.

Every scenario ends with `print_ledger` (ops/ledger.py — the same reading `jobscore ledger` does) and
asserts ``lost == 0``. The ledger goes to stdout with ``print`` so ``pytest -s`` and CI logs show it.
Everything is on loopback: the session broker and Redis of tests/conftest.py, or a broker / redis-server a
scenario starts itself on a free port when it is going to stop, freeze or restart it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine.tinymodel import build_tiny_model
from jobscore.settings import CommonSettings, WorkerSettings, settings_env
from ops.ledger import PostingsLedger, RequestLedger, Window, postings_ledger, request_ledger

# After its end offset, a partition counts as read once idle this long (the ledger's tansu grace).
LEDGER_IDLE_S = 0.5
# A worker process on the tiny model: vLLM start-up on two shared cores takes most of this.
PROCESS_START_S = 240.0


async def print_ledger(s: CommonSettings, title: str, window: Window | None = None) -> RequestLedger:
    led = await request_ledger(s, window or Window(), idle_s=LEDGER_IDLE_S)
    print(f"\n===== ledger after: {title} =====\n{led.render()}\n", flush=True)
    return led


async def print_postings_ledger(s: CommonSettings, version: str, title: str) -> PostingsLedger:
    led = await postings_ledger(s, Window(), version, idle_s=LEDGER_IDLE_S)
    print(f"\n===== postings ledger after: {title} =====\n{led.render()}\n", flush=True)
    return led


@dataclass
class WorkerProcess:
    """`jobscore worker` as a child process (only where killing the process is the point)."""

    proc: subprocess.Popen[str]
    log_path: Path

    @classmethod
    def start(cls, ws: WorkerSettings) -> WorkerProcess:
        log_path = Path(tempfile.mkstemp(prefix="jobscore-fault-worker-", suffix=".log")[1])
        # The tiny model: the default (the shipped scorer) is for users, not for plumbing faults.
        tiny = str(
            build_tiny_model(Path(os.environ["JOBSCORE_CACHE_DIR"]) if "JOBSCORE_CACHE_DIR" in os.environ else None)
        )
        env = settings_env(ws, JOBSCORE_DTYPE="float32", JOBSCORE_MAX_MODEL_LEN="1024", JOBSCORE_MODEL=tiny)
        with log_path.open("w") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker"],
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        return cls(proc, log_path)

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children(recursive=True)
        return []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_all(self) -> None:
        """Clean-up: the process and anything it left behind."""
        for p in [*self.descendants()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


class DelegatingEngine:
    """The real engine with a fault injected around it: ``before(prompts)`` runs ahead of every engine call
    (in the worker's scoring thread) and may sleep (a slow device) or raise (a failing one)."""

    def __init__(self, inner: Any, before: Callable[[Sequence[Sequence[int]]], None]) -> None:
        self.inner = inner
        self.before = before
        self.info = inner.info
        self.max_model_len = inner.max_model_len
        self.tokenizer = inner.tokenizer
        self.calls = 0

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        self.calls += 1
        self.before(prompts)
        return list(self.inner.score_tokens(prompts))

    def score(self, prompts: Sequence[str]) -> list[float]:
        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        return self.score_tokens(ids)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return list(self.inner.count_tokens(texts))

    def close(self) -> None:
        pass  # the shared engine is closed by its fixture
