"""/healthz and /readyz of real services: a summarizer whose Redis goes away and comes back, a worker
that loads, serves and drains. Probed over HTTP on the metrics port, as Kubernetes would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from jobscore import health
from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from ops.devstack import free_port
from summarizer.service import Summarizer
from tests.conftest import WAIT_S, RedisServer, wait_until
from tests.helpers import running
from worker.loop import Worker

PROBE_S = 0.3  # health_probe_interval_s in these tests: readiness follows Redis within about this


@dataclass(frozen=True)
class Probe:
    code: int
    body: dict[str, Any]


def get(port: int, path: str) -> Probe:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return Probe(r.status, json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return Probe(e.code, json.loads(e.read()))


async def aget(port: int, path: str) -> Probe:
    return await asyncio.to_thread(get, port, path)


@pytest.fixture
def http_port() -> Iterator[int]:
    """/metrics, /healthz, /readyz of this process on a free port (what `metrics.serve` does)."""
    port = free_port()
    server = health.serve(port, host="127.0.0.1")
    assert server is not None
    yield port
    server.shutdown()
    server.server_close()


async def wait_probe(port: int, path: str, pred: Callable[[Probe], bool], what: str) -> Probe:
    last: list[Probe] = []

    async def check() -> bool:
        last[:] = [await aget(port, path)]
        return pred(last[0])

    try:
        await wait_until(check, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; last {path}: {last}") from None
    return last[0]


class TestSummarizerHealth:
    async def test_readyz_follows_redis_down_and_back(
        self,
        http_port: int,
        summarizer_settings: Callable[..., SummarizerSettings],
        topics: CommonSettings,
        own_redis: RedisServer,
    ) -> None:
        rds = own_redis
        try:
            ss = summarizer_settings(
                redis_url=rds.url, extractive_embeddings=False, health_probe_interval_s=PROBE_S, liveness_timeout_s=30
            )
            async with running(Summarizer(ss), faults=True):
                ok = await wait_probe(http_port, "/readyz", lambda p: p.code == 200, "summarizer ready")
                assert set(ok.body["checks"]) >= {"broker", "redis", "summarizer", "draining"}
                live = await aget(http_port, "/healthz")
                assert live.code == 200 and live.body["alive"] is True

                rds.stop()
                down = await wait_probe(http_port, "/readyz", lambda p: p.code == 503, "not ready without Redis")
                assert down.body["checks"]["redis"]["ok"] is False, down.body
                assert down.body["checks"]["redis"]["reason"], "a not-ready check must say why"
                assert (await aget(http_port, "/healthz")).code == 200, "Redis down is not-ready, not dead"

                rds.start()
                back = await wait_probe(http_port, "/readyz", lambda p: p.code == 200, "ready again with Redis back")
                assert back.body["checks"]["redis"]["ok"] is True
        finally:
            rds.stop()  # before the drained check: a Redis still up would not change it, but say what is tested
        # `running` stopped it: stopping is draining, which is not ready.
        drained = await aget(http_port, "/readyz")
        assert drained.code == 503 and drained.body["checks"]["draining"]["ok"] is False

    async def test_dead_redis_port_never_ready(
        self, http_port: int, summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
    ) -> None:
        ss = summarizer_settings(
            redis_url=f"redis://127.0.0.1:{free_port()}/0", extractive_embeddings=False, health_probe_interval_s=PROBE_S
        )
        async with running(Summarizer(ss), faults=True):
            p = await wait_probe(
                http_port,
                "/readyz",
                lambda p: p.body["checks"]["broker"]["ok"] and p.body["checks"]["redis"]["reason"] != "not probed yet",
                "both dependencies probed",
            )
            assert p.code == 503 and p.body["checks"]["redis"]["ok"] is False
            assert "Connection" in p.body["checks"]["redis"]["reason"], p.body
            assert all(c["ok"] for k, c in p.body["checks"].items() if k != "redis"), "only the dead dependency fails"


@pytest.mark.engine
class TestWorkerHealth:
    async def test_ready_after_start_not_ready_while_draining_dead_when_stalled(
        self, http_port: int, vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
    ) -> None:
        ws = worker_settings(health_probe_interval_s=PROBE_S, liveness_timeout_s=3)
        w = Worker(ws, vllm_engine)
        await w.start()
        task = asyncio.create_task(w.run())
        try:
            ok = await wait_probe(http_port, "/readyz", lambda p: p.code == 200, "worker ready")
            assert {k for k, c in ok.body["checks"].items() if c["ok"]} >= {
                "engine",
                "broker",
                "redis",
                "consumer_group",
                "draining",
            }
            assert (await aget(http_port, "/healthz")).code == 200
            w.stop()
            draining = await aget(http_port, "/readyz")
            assert draining.code == 503 and draining.body["checks"]["draining"]["ok"] is False
            await asyncio.wait_for(task, WAIT_S)
        finally:
            w.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, WAIT_S)
            await w.close()
        # The loop no longer iterates: after liveness_timeout_s /healthz fails (a hung loop looks the same).
        dead = await wait_probe(http_port, "/healthz", lambda p: p.code == 503, "healthz 503 without beats")
        # >=: the age is shown rounded to ms, so 3.0004 s (already past the limit) reads 3.0.
        assert dead.body["alive"] is False and dead.body["last_beat_s_ago"] >= 3


def test_services_serve_health_on_a_default_port_and_refuse_a_taken_one(
    summarizer_settings: Callable[..., SummarizerSettings], topics: CommonSettings
) -> None:
    """Issue 30: with --metrics-port 0 by default, a plain `jobscore worker` served no /readyz. Now the worker
    defaults to 9100 and the summarizer to 9101 (one host runs both); a port already taken stops the service at
    start with one line saying what to set, instead of running without the endpoints it promises."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from jobscore.settings import settings_env

    assert WorkerSettings.model_fields["metrics_port"].default == 9100
    assert SummarizerSettings.model_fields["metrics_port"].default == 9101
    root = Path(__file__).resolve().parent.parent
    env = settings_env(summarizer_settings())
    env.pop("JOBSCORE_METRICS_PORT")  # the default, as a user runs it (the suite sets 0 for its own services)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "summarizer"], cwd=root, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        end = time.monotonic() + WAIT_S
        probe = None
        while time.monotonic() < end and proc.poll() is None:
            try:
                probe = get(SummarizerSettings.model_fields["metrics_port"].default, "/readyz")
                if probe.code == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)  # polling an HTTP endpoint that comes up with the service
        assert probe is not None and probe.code == 200 and "summarizer" in probe.body["checks"], probe
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT_S)
    # A taken port: exit 2 before anything loads, with what to do.
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "worker", "--metrics-port", str(port)],
            cwd=root,
            env={**os.environ},
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
    assert out.returncode == 2, out.stderr
    assert f"port {port}" in out.stderr and "--metrics-port" in out.stderr and "Traceback" not in out.stderr
