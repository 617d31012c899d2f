"""Load and soak: a steady request rate through the whole pipeline for N minutes, on loopback.

The stack is the embedded one (ops/devstack.py `dev_stack`: tansu + Redis) unless a broker is given;
the workers are real `jobscore worker` processes on the tiny model, so their memory is measured as it
would be in production: RSS of each worker process and of its vLLM engine processes, sampled over time.
A leak shows as RSS that keeps growing after warm-up; the report gives the growth per worker process
between the first sample after warm-up and the last, and the least-squares slope over all of them.

Throughput and latency are measured at the client: a request's latency is from its ``created_at`` (just
before it is sent) to the arrival of its ranking on the rankings topic. At the end the sender stops, the
run waits (bounded) for the last answers, and the ledger (ops/ledger.py) of the run's request ids is
printed: ``lost`` must be 0.

``--rate auto`` first measures capacity with a burst and then runs at 70% of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.corpora import job_postings, search_queries
from client import RankingWaiter, new_request
from jobscore.cache import SummaryCache
from jobscore.kafka import make_producer
from jobscore.settings import WorkerSettings, settings_env
from jobscore.topics import ensure_topics
from ops.ledger import RequestLedger, Window, request_ledger
from schemas import SCORE_REQUESTS, Ranking
from summarizer.writer import build_records

log = logging.getLogger(__name__)

CAPACITY_SHARE = 0.7  # --rate auto runs at this share of the measured capacity
WORKER_START_S = 600.0  # vLLM start-up on a busy 2-core host
DRAIN_S = 120.0  # after the sender stops, how long the last answers may take


@dataclass
class Sample:
    """One point of the time series (every ``sample_s``)."""

    t_s: float
    sent: int
    answered: int
    rate_per_s: float  # answers per second over the last interval
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: dict[str, float]  # per process: "worker0", "worker0.engine" (its children, summed)
    load1: float  # the host's 1-minute load average (a shared host: other work competes for the cores)


@dataclass
class SoakReport:
    machine: str
    rate_per_s: float
    minutes: float
    candidates: int
    workers: int
    capacity_per_s: float | None
    sent: int = 0
    answered: int = 0
    throughput_per_s: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_start_mb: dict[str, float] = field(default_factory=dict)
    rss_end_mb: dict[str, float] = field(default_factory=dict)
    rss_slope_mb_per_min: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    ledger_command: str = ""  # `jobscore ledger --run-id-prefix <run>` and what it printed

    def render(self) -> str:
        lines = [
            f"soak: {self.minutes:g} min at {self.rate_per_s:.2f} requests/s x {self.candidates} candidates, "
            f"{self.workers} worker process(es), {self.machine}"
            + (f"; measured capacity {self.capacity_per_s:.2f} requests/s" if self.capacity_per_s else ""),
            f"sent {self.sent}, answered {self.answered}: {self.throughput_per_s:.2f} requests/s, "
            f"{self.items_per_s:.0f} items/s",
            f"latency (created -> ranking received): p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
            f"max {self.max_ms:.0f} ms",
            "RSS per process (after warm-up -> end; least-squares slope):",
        ]
        for name in sorted(self.rss_end_mb):
            lines.append(
                f"  {name:<16} {self.rss_start_mb.get(name, 0):8.0f} MB -> {self.rss_end_mb[name]:8.0f} MB   "
                f"{self.rss_slope_mb_per_min.get(name, 0):+.2f} MB/min"
            )
        lines.append("time series: t_s answered rate/s p50_ms p99_ms load1 rss_mb")
        for s in self.samples:
            rss = " ".join(f"{k}={v:.0f}" for k, v in sorted(s.rss_mb.items()))
            lines.append(
                f"  {s.t_s:6.0f} {s.answered:7d} {s.rate_per_s:6.2f} {_fmt(s.p50_ms):>7} {_fmt(s.p99_ms):>7} "
                f"{s.load1:5.1f}  {rss}"
            )
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


class _Answers(RankingWaiter):
    """Follows the rankings topic from its end and records when each request's first ranking arrived."""

    def __init__(self, s: WorkerSettings) -> None:
        super().__init__(s, on_ranking=self._arrived)
        self.latency_ms: dict[str, float] = {}
        self.arrivals: list[tuple[float, float]] = []  # (monotonic arrival, latency ms)
        self.created: dict[str, float] = {}  # request id -> created_at, filled by the sender

    def _arrived(self, r: Ranking) -> None:
        created = self.created.get(r.request_id)
        if created is None or r.request_id in self.latency_ms:
            return
        ms = (time.time() - created) * 1e3
        self.latency_ms[r.request_id] = ms
        self.arrivals.append((time.monotonic(), ms))


def _rss(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for i, p in enumerate(procs):
        with contextlib.suppress(psutil.NoSuchProcess):
            main = psutil.Process(p.pid)
            out[f"worker{i}"] = main.memory_info().rss / 2**20
            kids = 0.0
            for c in main.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    kids += c.memory_info().rss / 2**20
            out[f"worker{i}.engine"] = kids
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per minute) of (seconds, MB) points."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


async def _send_steady(
    s: WorkerSettings,
    answers: _Answers,
    job_ids: list[str],
    run: str,
    rate: float,
    seconds: float,
    candidates: int,
    on_tick: Any = None,
    corpus: str = "generated",
) -> int:
    """Send ``rate`` requests/s for ``seconds`` (a schedule, not a loop with sleeps that drift)."""
    producer = make_producer(s)
    await producer.start()
    qs = search_queries(corpus, 512, seed=7)
    sent = 0
    t0 = time.monotonic()
    try:
        while True:
            now = time.monotonic() - t0
            if now >= seconds:
                return sent
            due = int(now * rate) + 1
            while sent < due:
                start = (sent * 37) % max(1, len(job_ids) - candidates)
                req = new_request(
                    qs[sent % len(qs)], job_ids[start : start + candidates], top_k=10, request_id=f"{run}{sent}"
                )
                answers.created[req.request_id] = req.created_at
                await producer.send(s.topic_requests, SCORE_REQUESTS.encode(req), key=req.request_id.encode())
                sent += 1
            if on_tick is not None:
                on_tick(sent)
            await asyncio.sleep(max(0.0, (sent / rate) - (time.monotonic() - t0)))
    finally:
        await producer.flush()
        await producer.stop()


async def soak(
    s: WorkerSettings,
    rate: float | None,
    minutes: float,
    candidates: int = 20,
    workers: int = 1,
    sample_s: float = 15.0,
    warmup_s: float = 60.0,
    jobs: int = 2000,
    corpus: str = "generated",
) -> SoakReport:
    """Run the soak against the broker/Redis in ``s``; ``rate=None`` measures capacity first (70% of it)."""
    run = f"soak-{uuid.uuid4().hex[:8]}-"
    await ensure_topics(s)
    items = job_postings(corpus, jobs, seed=11, paragraphs=2, prefix=f"{run}job")
    cache = SummaryCache.from_url(s.redis_url, s.summarizer_version)
    recs = build_records(items, s.summarizer_version, 128)
    for i in range(0, len(recs), 500):
        await cache.write(recs[i : i + 500])
    await cache.close()
    job_ids = [p.job_id for p in items]

    logdir = Path(tempfile.mkdtemp(prefix="jobscore-soak-"))
    # Several workers on this host: the health endpoints' default port would be taken by the first.
    env = settings_env(s, JOBSCORE_METRICS_PORT="0")
    procs: list[subprocess.Popen[bytes]] = []
    answers = _Answers(s)
    try:
        for i in range(workers):
            with (logdir / f"worker{i}.log").open("wb") as logf:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "app.cli", "worker"],
                        env=env,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        await answers.start()
        # Warm: the workers are up once a first request is answered.
        print(f"[soak] starting {workers} worker process(es) (logs in {logdir})", file=sys.stderr, flush=True)
        await _send_steady(s, answers, job_ids, run + "warm-", 1.0, 1.0, candidates, corpus=corpus)
        deadline = time.monotonic() + WORKER_START_S
        while not answers.latency_ms:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker process exited during start-up; see {logdir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from the workers after {WORKER_START_S:.0f}s; see {logdir}")
            await asyncio.sleep(0.5)  # waiting on a child process's start-up: nothing to await on
        capacity = None
        if rate is None:
            capacity = await _measure_capacity(s, answers, job_ids, run + "cap-", candidates, corpus)
            rate = CAPACITY_SHARE * capacity
            print(f"[soak] capacity {capacity:.2f} requests/s; running at {rate:.2f}", file=sys.stderr, flush=True)
        rep = SoakReport(machine(), rate, minutes, candidates, workers, capacity)
        main_run = run + "main-"
        t0 = time.monotonic()
        last = {"t": t0, "n": 0}
        mem: dict[str, list[tuple[float, float]]] = {}

        def sample(sent: int) -> None:
            now = time.monotonic()
            if now - last["t"] < sample_s:
                return
            recent = [ms for t, ms in answers.arrivals if t > last["t"]]
            done = sum(1 for k in answers.latency_ms if k.startswith(main_run))
            rss = _rss(procs)
            rep.samples.append(
                Sample(
                    round(now - t0, 1),
                    sent,
                    done,
                    (done - last["n"]) / (now - last["t"]),
                    _pct(recent, 0.5) if recent else None,
                    _pct(recent, 0.99) if recent else None,
                    rss,
                    round(os.getloadavg()[0], 1),
                )
            )
            for k, v in rss.items():
                mem.setdefault(k, []).append((now - t0, v))
            last.update(t=now, n=done)
            print(f"[soak] {rep.samples[-1]}", file=sys.stderr, flush=True)

        rep.sent = await _send_steady(
            s, answers, job_ids, main_run, rate, minutes * 60, candidates, sample, corpus=corpus
        )
        send_s = time.monotonic() - t0
        main_ids = [f"{main_run}{i}" for i in range(rep.sent)]
        deadline = time.monotonic() + DRAIN_S
        while not all(i in answers.latency_ms for i in main_ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the last answers are in flight; the ledger below says what is missing
        lat = [answers.latency_ms[i] for i in main_ids if i in answers.latency_ms]
        rep.answered = len(lat)
        rep.throughput_per_s = rep.answered / send_s
        rep.items_per_s = rep.throughput_per_s * candidates
        rep.p50_ms, rep.p99_ms, rep.max_ms = _pct(lat, 0.5), _pct(lat, 0.99), max(lat, default=0.0)
        for k, pts in mem.items():
            warm = [p for p in pts if p[0] >= min(warmup_s, minutes * 30)] or pts
            rep.rss_start_mb[k], rep.rss_end_mb[k] = warm[0][1], warm[-1][1]
            rep.rss_slope_mb_per_min[k] = _slope(warm)
        led: RequestLedger = await request_ledger(s, Window(id_prefix=main_run))
        rep.ledger = led.to_dict()
        rep.ledger.pop("reads", None)
        # The same ledger as an operator gets it: the command itself, against this run's stack.
        cmd = ["jobscore", "ledger", "--run-id-prefix", main_run]
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "app.cli", *cmd[1:]],
            env=settings_env(s),
            capture_output=True,
            text=True,
            timeout=600,
        )
        rep.ledger_command = f"$ {' '.join(cmd)}\n{out.stdout}(exit code {out.returncode})"
        print(rep.ledger_command, flush=True)
        return rep
    finally:
        await answers.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


async def _measure_capacity(
    s: WorkerSettings, answers: _Answers, job_ids: list[str], run: str, candidates: int, corpus: str = "generated"
) -> float:
    """Requests/s the workers sustain: a burst of requests, answered as fast as they can be."""
    n = 200
    producer = make_producer(s)
    await producer.start()
    qs = search_queries(corpus, n, seed=9)
    try:
        for i in range(n):
            req = new_request(qs[i], job_ids[i : i + candidates], request_id=f"{run}{i}")
            answers.created[req.request_id] = req.created_at
            await producer.send(s.topic_requests, SCORE_REQUESTS.encode(req), key=req.request_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    ids = [f"{run}{i}" for i in range(n)]
    # Count from the 20th answer to the last: the start of a burst measures the queue filling, not capacity.
    while sum(1 for i in ids if i in answers.latency_ms) < 20:
        await asyncio.sleep(0.2)
    t0, done0 = time.monotonic(), sum(1 for i in ids if i in answers.latency_ms)
    deadline = t0 + DRAIN_S * 3
    while sum(1 for i in ids if i in answers.latency_ms) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    done = sum(1 for i in ids if i in answers.latency_ms)
    return (done - done0) / (time.monotonic() - t0)


def run(
    s: WorkerSettings,
    rate: float | None,
    minutes: float,
    candidates: int,
    workers: int,
    sample_s: float,
    use_given_broker: bool,
    json_out: str | None,
    corpus: str = "generated",
) -> SoakReport:
    from ops.devstack import dev_stack

    redis_url = s.redis_url.get_secret_value() if hasattr(s.redis_url, "get_secret_value") else s.redis_url
    with dev_stack(s.kafka_bootstrap if use_given_broker else None, str(redis_url)) as (bs, url):
        tag = uuid.uuid4().hex[:8]
        s = s.model_copy(
            update={
                "kafka_bootstrap": bs,
                "redis_url": type(s.redis_url)(url) if hasattr(s.redis_url, "get_secret_value") else url,
                "topic_requests": f"soak-{tag}.requests",
                "topic_rankings": f"soak-{tag}.rankings",
                "topic_dead_letters": f"soak-{tag}.dlq",
                "topic_postings": f"soak-{tag}.postings",
                "summarizer_version": f"soak-{tag}",
                "group_id": f"soak-{tag}",
            }
        )
        rep = asyncio.run(soak(s, rate, minutes, candidates, workers, sample_s, corpus=corpus))
    print(rep.render())
    if json_out:
        Path(json_out).write_text(json.dumps(asdict(rep), indent=2))
    return rep
