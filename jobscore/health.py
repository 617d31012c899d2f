"""Liveness and readiness of one process, served beside the metrics.

Services report what they depend on (``broker``, ``redis``, ``engine``, ``draining``…) with
`Health.set`; the loop calls `Health.beat` every iteration. ``/healthz`` answers 200 while the loop has
beaten within ``liveness_timeout_s`` (a hung process is restarted); ``/readyz`` answers 200 only while
every check is ok (a process that cannot serve is taken out of rotation, not killed). State changes
are logged once, not per probe, and exported as ``jobscore_ready{check}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

log = logging.getLogger(__name__)

READY = Gauge("jobscore_ready", "1 while a readiness check passes, by check.", ["check"])


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str
    since: float


class Health:
    def __init__(self, liveness_timeout_s: float = 60.0) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self._checks: dict[str, Check] = {}
        self._last_beat = time.monotonic()
        self._lock = threading.Lock()

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def set(self, check: str, ok: bool, reason: str = "") -> None:
        """Record one dependency's state; a change is logged (once) and exported."""
        with self._lock:
            old = self._checks.get(check)
            if old is not None and old.ok == ok:
                if old.reason != reason:  # same state, newer reason (say why *now*): no log line, same since
                    self._checks[check] = Check(ok, reason, old.since)
                return
            self._checks[check] = Check(ok, reason, time.time())
        READY.labels(check).set(1 if ok else 0)
        if ok:
            log.info("ready: %s", check, extra={"check": check})
        else:
            log.warning("not ready: %s", check, extra={"check": check, "reason": reason})

    def alive(self, age: float | None = None) -> bool:
        """The loop beat within ``liveness_timeout_s`` (``age``: seconds since the last beat, if already read)."""
        if age is None:
            age = time.monotonic() - self._last_beat
        return age <= self.liveness_timeout_s

    def ready(self) -> bool:
        with self._lock:
            return bool(self._checks) and all(c.ok for c in self._checks.values())

    def report(self) -> dict[str, object]:
        with self._lock:
            checks = {k: {"ok": c.ok, "reason": c.reason, "since": c.since} for k, c in self._checks.items()}
        age = time.monotonic() - self._last_beat  # one reading: "alive" and the age it shows agree
        return {
            "alive": self.alive(age),
            "ready": self.ready(),
            "last_beat_s_ago": round(age, 3),
            "checks": checks,
        }

    def reset(self) -> None:
        """Forget every check (a new service instance in the same process: tests, the demo)."""
        with self._lock:
            self._checks.clear()
        self.beat()


# One per process: a process runs one service.
HEALTH = Health()

# A dependency probe: raises (or times out) when the dependency cannot be used.
Probe = Callable[[], Awaitable[object]]


async def probe_forever(
    probes: Mapping[str, Probe], interval_s: float = 2.0, timeout_s: float = 2.0, health: Health = HEALTH
) -> None:
    """Run each probe every ``interval_s`` and record its outcome as that check (cancel to stop).

    Probing, rather than only reacting to errors on the data path, is what lets readiness come *back*: an
    idle service sees no error when Redis returns, and a busy one may never touch Redis between errors.
    """
    while True:
        for name, probe in probes.items():
            try:
                async with asyncio.timeout(timeout_s):
                    await probe()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure means "not usable now"; the reason says which
                health.set(name, False, f"{type(e).__name__}: {e or 'timed out'}"[:300])
            else:
                health.set(name, True)
        await asyncio.sleep(interval_s)


def start_probes(probes: Mapping[str, Probe], interval_s: float, health: Health = HEALTH) -> asyncio.Task[None]:
    """`probe_forever` as a task on the running loop; the caller cancels it on close."""
    return asyncio.create_task(probe_forever(probes, interval_s, interval_s, health), name="health-probes")


class _Handler(BaseHTTPRequestHandler):
    health: Health = HEALTH

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif self.path.startswith("/healthz"):
            report = self.health.report()  # the status code and the body from one reading
            self._json(200 if report["alive"] else 503, report)
        elif self.path.startswith("/readyz"):
            report = self.health.report()
            self._json(200 if report["ready"] else 503, report)
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

    def _json(self, code: int, report: dict[str, object]) -> None:
        self._send(code, json.dumps(report).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not worth a line
        pass


def serve(port: int, health: Health = HEALTH, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Serve /metrics, /healthz and /readyz on ``port`` in a daemon thread (0: don't serve)."""
    if not port:
        return None
    handler = type("Handler", (_Handler,), {"health": health})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
