"""Kafka transport security: every client (admin, producer, consumer, the client library) connects over
TLS with the ``kafka_ssl_*`` settings, and a client configured without them fails with a message that
says what to set.

The TLS listener: tansu 0.6.0 (the embedded broker) cannot serve TLS itself — its CLI rejects ``--cert``
together with ``--key`` ("cannot be used with"), and ``--cert`` alone leaves the listener in plain TCP
(checked: a TLS handshake to it times out). So the tests put a TLS terminator (Python's ``ssl``,
mutual TLS: client certificates required) in front of a tansu broker that *advertises the terminator's
port*, so every connection a client makes — bootstrap and the broker connections from metadata —
goes through TLS. The terminator counts handshakes and the client certificates it verified.

SASL: tansu 0.6.0 offers SCRAM only with ``--authentication``, and then refuses the unauthenticated
AlterUserScramCredentials that ``tansu user create`` sends, while its storage is memory-only — no user
can ever log in. So the same listener also terminates SASL (``SaslUsers``): it answers SaslHandshake and
SaslAuthenticate itself, checking SCRAM-SHA-256/512 with `scramp` (a SCRAM server implementation
independent of aiokafka's client) and PLAIN by comparison, and forwards nothing but ApiVersions before a
login succeeds. Against tansu ``--authentication`` itself: a client without SASL settings is refused
with the what-to-set message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from client import RankingWaiter, kafka, new_request, publish_postings, publish_requests, tail
from client.kafka import security_kwargs
from jobscore.cache import SummaryCache
from jobscore.kafka import KafkaUnreachable, make_consumer, make_producer
from jobscore.settings import CommonSettings, WorkerSettings
from jobscore.topics import ensure_topics
from ops.devstack import free_port, tansu_binary, wait_for_port
from schemas import POSTINGS, JobPosted
from tests.conftest import WAIT_S
from tests.helpers import running
from tests.security_certs import Pki, make_pki

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
SASL_AUTHENTICATION_FAILED = 58


@dataclass
class SaslUsers:
    """The logins a `TlsTerminator` accepts. SCRAM is checked by `scramp` (an implementation independent of
    aiokafka's client side); PLAIN by comparing the password."""

    mechanism: str
    users: dict[str, str]
    authenticated: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mechanism.startswith("SCRAM-"):
            from scramp import ScramMechanism

            self.scram = ScramMechanism(self.mechanism)
            # What a broker stores per user: salt, StoredKey, ServerKey, iterations (never the password).
            self.auth_info = {u: self.scram.make_auth_info(pw, iteration_count=4096) for u, pw in self.users.items()}

    def login(self) -> SaslLogin:
        return SaslLogin(self)


class SaslLogin:
    """One connection's login: ``step(client bytes) -> (reply, done)``; raises when the login is refused."""

    def __init__(self, users: SaslUsers) -> None:
        self.users = users
        self.user = ""
        self.server = users.scram.make_server(self._auth_info) if users.mechanism.startswith("SCRAM-") else None

    def _auth_info(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = user
        return self.users.auth_info[user]

    def step(self, token: bytes) -> tuple[bytes, bool]:
        if self.server is None:  # PLAIN: authzid NUL user NUL password
            _, user, pw = token.decode().split("\0")
            if self.users.users.get(user) != pw:
                raise PermissionError(f"bad password for {user!r}")
            self.users.authenticated.append(user)
            return b"", True
        if self.server.stage is None:
            self.server.set_client_first(token.decode())
            return self.server.get_server_first().encode(), False
        self.server.set_client_final(token.decode())  # scramp checks the proof: the client knew the password
        self.users.authenticated.append(self.user)
        return self.server.get_server_final().encode(), True


def _frame(correlation_id: int, body: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(body), correlation_id) + body


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


@dataclass
class TlsTerminator:
    """A TLS listener on ``port`` forwarding each connection to ``upstream_port`` (plain TCP), run on its
    own thread and event loop so the test's loop only sees the client side. With ``sasl``, a connection
    must log in first (SaslHandshake + SaslAuthenticate, answered here; only ApiVersions is forwarded
    before that, as a SASL listener of a real broker does) and is closed on any other request or a
    refused login. ``context=None``: no TLS (SASL_PLAINTEXT)."""

    upstream_port: int
    context: ssl.SSLContext | None
    sasl: SaslUsers | None = None
    port: int = field(default_factory=free_port)
    handshakes: int = 0
    client_subjects: list[str] = field(default_factory=list)
    failed_handshakes: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> TlsTerminator:
        ready = threading.Event()

        async def serve() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)
            self._loop = asyncio.get_running_loop()
            self._loop.set_exception_handler(self._on_loop_error)
            ready.set()
            async with server:
                await server.serve_forever()

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):  # stop() cancels serve_forever
                asyncio.run(serve())

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "TLS terminator did not start"
        return self

    @staticmethod
    def _cancel_all() -> None:
        for task in asyncio.all_tasks():
            task.cancel()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        if isinstance(ctx.get("exception"), asyncio.CancelledError):
            return  # stop() cancelled a connection's pumps: not an error
        # A client that does not speak TLS (or distrusts our CA) fails the handshake here.
        if isinstance(ctx.get("exception"), ssl.SSLError | ConnectionError | OSError):
            self.failed_handshakes += 1
            return
        loop.default_exception_handler(ctx)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        cert = writer.get_extra_info("peercert") or {}
        self.client_subjects += [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        if self.sasl is not None and not await self._login(reader, writer, up_reader, up_writer):
            writer.close()
            up_writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        from aiokafka.protocol.admin import (
            SaslAuthenticateResponse_v0,
            SaslAuthenticateResponse_v1,
            SaslHandShakeResponse_v0,
        )

        assert self.sasl is not None
        login = self.sasl.login()
        try:
            while True:
                req = await _read_frame(reader)
                api_key, version, correlation_id, client_len = struct.unpack(">hhih", req[:10])
                body = req[10 + max(client_len, 0) :]
                if api_key == API_VERSIONS:
                    up_writer.write(struct.pack(">i", len(req)) + req)
                    await up_writer.drain()
                    resp = await _read_frame(up_reader)
                    writer.write(struct.pack(">i", len(resp)) + resp)
                elif api_key == SASL_HANDSHAKE:
                    mechanisms = [self.sasl.mechanism]
                    writer.write(_frame(correlation_id, SaslHandShakeResponse_v0(0, mechanisms).encode()))
                elif api_key == SASL_AUTHENTICATE:
                    (size,) = struct.unpack(">i", body[:4])
                    token = body[4 : 4 + size]
                    cls = SaslAuthenticateResponse_v1 if version >= 1 else SaslAuthenticateResponse_v0
                    extra = (0,) if version >= 1 else ()
                    try:
                        reply, done = login.step(token)
                    except Exception as e:  # scramp.ScramException, PermissionError: a refused login
                        self.sasl.refused.append(str(e))
                        resp = cls(SASL_AUTHENTICATION_FAILED, f"authentication failed: {e}", b"", *extra)
                        writer.write(_frame(correlation_id, resp.encode()))
                        await writer.drain()
                        return False
                    writer.write(_frame(correlation_id, cls(0, None, reply, *extra).encode()))
                    await writer.drain()
                    if done:
                        return True
                else:
                    return False  # a request before logging in: a SASL listener drops the connection
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        # One callback cancels every task from inside the loop: cancelling them one call_soon_threadsafe at a
        # time raced asyncio.run closing the loop once serve() ended ("Event loop is closed" in CI).
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._cancel_all)
        if self._thread is not None:
            self._thread.join(timeout=10)


def _tansu(port: int, advertised_port: int, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised_port}",
            "--storage-engine",
            "memory://tansu/",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[TlsTerminator]:
    """tansu behind a mutual-TLS terminator; the broker advertises the terminator's port."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    plain = free_port()
    term = TlsTerminator(plain, ctx)
    proc = _tansu(plain, term.port)
    term.start()
    try:
        yield term
    finally:
        term.stop()
        _stop(proc)


@contextlib.contextmanager
def _sasl_listener(users: SaslUsers, pki: Pki | None) -> Iterator[TlsTerminator]:
    """tansu behind a SASL listener (with TLS when ``pki`` is given); the broker advertises the listener."""
    ctx = None
    if pki is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    plain = free_port()
    term = TlsTerminator(plain, ctx, sasl=users)
    proc = _tansu(plain, term.port)
    term.start()
    try:
        yield term
    finally:
        term.stop()
        _stop(proc)


def _settings(bootstrap: str, **kw: Any) -> CommonSettings:
    run = uuid.uuid4().hex[:8]
    return CommonSettings(
        kafka_bootstrap=bootstrap,
        topic_postings=f"sec-{run}.postings",
        topic_requests=f"sec-{run}.requests",
        topic_rankings=f"sec-{run}.rankings",
        topic_dead_letters=f"sec-{run}.dlq",
        topic_partitions=1,
        session_timeout_ms=6_000,
        **kw,
    )


def _tls(pki: Pki, **kw: Any) -> dict[str, Any]:
    return {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca,
        "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key,
        **kw,
    }


class TestKafkaTls:
    async def test_admin_producer_consumer_and_client_library_round_trip_over_tls(
        self, tls_broker: TlsTerminator, pki: Pki
    ) -> None:
        s = _settings(f"127.0.0.1:{tls_broker.port}", **_tls(pki))
        before = tls_broker.handshakes
        await ensure_topics(s)  # admin client
        producer = make_producer(s)
        consumer = make_consumer(s, f"g-{uuid.uuid4().hex[:8]}", s.topic_postings)
        await producer.start()
        await consumer.start()
        try:
            await producer.send_and_wait(s.topic_postings, b"over tls", key=b"k1")
            got = await asyncio.wait_for(consumer.getone(), WAIT_S)
            assert got.value == b"over tls"
        finally:
            await producer.stop()
            await consumer.stop()
        # The client library (jobscore/client.py): publish through it, read back through its tail().
        posting = JobPosted(job_id="tls-job", title="Cryptographer", description="Keys and certificates.")
        assert await publish_postings(s, [posting]) == 1
        seen = [m async for _, m in tail(s, POSTINGS, from_beginning=True, idle_exit_s=3.0)]
        assert any(isinstance(m, JobPosted) and m.job_id == "tls-job" for m in seen)
        # Every connection was a verified mutual-TLS one, from our client certificate.
        assert tls_broker.handshakes - before >= 4
        assert set(tls_broker.client_subjects) == {"jobscore-client"}

    @pytest.mark.engine
    async def test_request_published_over_tls_gets_a_ranking_from_the_worker(
        self, tls_broker: TlsTerminator, pki: Pki, vllm_engine: Any, redis_url: str
    ) -> None:
        from engine.corpus import postings
        from summarizer.writer import build_records
        from worker.loop import Worker

        run = uuid.uuid4().hex[:8]
        base = _settings(f"127.0.0.1:{tls_broker.port}", **_tls(pki))
        ws = WorkerSettings(
            **base.model_dump(include=set(CommonSettings.model_fields) - {"redis_url"}),
            redis_url=redis_url,
            group_id=f"w-{run}",
            summarizer_version=f"v-{run}",
        )
        await ensure_topics(ws)
        items = postings(6, seed=9, prefix=f"tls-{run}")
        cache = SummaryCache.from_url(ws.redis_url, ws.summarizer_version)
        await cache.write(build_records(items, ws.summarizer_version, 128))
        await cache.close()
        req = new_request("python developer", [p.job_id for p in items], top_k=3)
        async with running(Worker(ws, vllm_engine)), RankingWaiter(ws) as waiter:
            await publish_requests(ws, [req])
            ranking = await waiter.wait(req.request_id, WAIT_S)
        assert ranking.status == "ok" and len(ranking.results) == 3 and not ranking.errors
        assert set(tls_broker.client_subjects) == {"jobscore-client"}

    async def test_plaintext_client_against_tls_listener_fails_saying_what_to_set(
        self, tls_broker: TlsTerminator
    ) -> None:
        s = _settings(f"127.0.0.1:{tls_broker.port}")
        with pytest.raises(KafkaUnreachable) as err:
            await asyncio.wait_for(ensure_topics(s), WAIT_S)
        msg = str(err.value)
        assert "kafka_security_protocol=PLAINTEXT" in msg
        assert "JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL" in msg and "JOBSCORE_KAFKA_SSL_CAFILE" in msg

    async def test_untrusted_broker_certificate_is_refused(
        self, tls_broker: TlsTerminator, tmp_path: Path, pki: Pki
    ) -> None:
        other = make_pki(tmp_path / "other", ca_name="some other CA")
        s = _settings(f"127.0.0.1:{tls_broker.port}", **_tls(pki, kafka_ssl_cafile=other.ca))
        with pytest.raises(KafkaUnreachable, match="JOBSCORE_KAFKA_SSL_CAFILE"):
            await asyncio.wait_for(ensure_topics(s), WAIT_S)

    async def test_listener_requiring_client_certificates_refuses_a_client_without_one(
        self, tls_broker: TlsTerminator, pki: Pki
    ) -> None:
        s = _settings(f"127.0.0.1:{tls_broker.port}", kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca)
        with pytest.raises(KafkaUnreachable, match="JOBSCORE_KAFKA_SSL_CERTFILE"):
            await asyncio.wait_for(ensure_topics(s), WAIT_S)


class TestEveryClientIsCovered:
    def test_every_aiokafka_client_in_the_source_is_built_by_the_one_access_point(self) -> None:
        """A client built anywhere but client/kafka.py's factories (which apply `security_kwargs`) could
        silently talk PLAINTEXT: the product builds none elsewhere, and each factory applies the kwargs."""
        import ast

        root = Path(__file__).resolve().parents[1]
        constructors = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient"}
        outside: list[str] = []
        factories: dict[str, bool] = {}
        for pkg in (
            "schemas",
            "engine",
            "client",
            "jobscore",
            "worker",
            "summarizer",
            "ops",
            "app",
            "bench",
            "compress",
        ):
            for path in (root / pkg).rglob("*.py"):
                tree = ast.parse(path.read_text(), str(path))
                for fn in ast.walk(tree):
                    if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                        continue
                    uses_helper = any(isinstance(n, ast.Name) and n.id == "security_kwargs" for n in ast.walk(fn))
                    for call in ast.walk(fn):
                        name = getattr(getattr(call, "func", None), "id", None) or getattr(
                            getattr(call, "func", None), "attr", None
                        )
                        if isinstance(call, ast.Call) and name in constructors:
                            where = f"{path.relative_to(root)}:{call.lineno} {name}"
                            if path.relative_to(root).as_posix() == "client/kafka.py":
                                factories[where] = uses_helper
                            else:
                                outside.append(where)
        assert not outside, f"aiokafka clients built outside client/kafka.py: {outside}"
        assert len(factories) == 3 and all(factories.values()), f"factories without security_kwargs: {factories}"


class TestKafkaSasl:
    async def test_broker_requiring_authentication_refuses_client_without_sasl_saying_what_to_set(self) -> None:
        port = free_port()
        proc = _tansu(port, port, "--authentication")
        try:
            with pytest.raises(KafkaUnreachable) as err:
                await asyncio.wait_for(ensure_topics(_settings(f"127.0.0.1:{port}")), WAIT_S)
        finally:
            _stop(proc)
        assert "JOBSCORE_KAFKA_SASL_USERNAME" in str(err.value)

    @pytest.mark.parametrize(
        ("protocol", "mechanism"),
        [
            ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
            ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
            ("SASL_SSL", "SCRAM-SHA-512"),
            ("SASL_SSL", "PLAIN"),
        ],
    )
    async def test_login_then_admin_producer_consumer_round_trip(self, protocol: str, mechanism: str, pki: Pki) -> None:
        users = SaslUsers(mechanism, {"svc-jobscore": "s3cret-pw"})
        with _sasl_listener(users, pki if protocol == "SASL_SSL" else None) as listener:
            s = _settings(
                f"127.0.0.1:{listener.port}",
                kafka_security_protocol=protocol,
                kafka_sasl_mechanism=mechanism,
                kafka_sasl_username="svc-jobscore",
                kafka_sasl_password="s3cret-pw",
                **({"kafka_ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}),
            )
            await ensure_topics(s)
            producer = make_producer(s)
            consumer = kafka.make_consumer(s.client_config(), None, s.topic_postings)
            await producer.start()
            await consumer.start()
            try:
                await producer.send_and_wait(s.topic_postings, b"after login")
                got = await asyncio.wait_for(consumer.getone(), WAIT_S)
            finally:
                await producer.stop()
                await consumer.stop()
        assert got.value == b"after login"
        assert len(users.authenticated) >= 3 and set(users.authenticated) == {"svc-jobscore"}
        assert not users.refused

    @pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
    async def test_wrong_password_is_refused_saying_what_to_set(self, mechanism: str) -> None:
        users = SaslUsers(mechanism, {"svc-jobscore": "s3cret-pw"})
        with _sasl_listener(users, None) as listener:
            s = _settings(
                f"127.0.0.1:{listener.port}",
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism=mechanism,
                kafka_sasl_username="svc-jobscore",
                kafka_sasl_password="not-the-password",
            )
            with pytest.raises(KafkaUnreachable, match="JOBSCORE_KAFKA_SASL_PASSWORD"):
                await asyncio.wait_for(ensure_topics(s), WAIT_S)
        assert users.refused and not users.authenticated

    async def test_client_without_sasl_is_dropped_by_a_sasl_listener(self) -> None:
        users = SaslUsers("SCRAM-SHA-512", {"svc-jobscore": "s3cret-pw"})
        with (
            _sasl_listener(users, None) as listener,
            pytest.raises(KafkaUnreachable, match="JOBSCORE_KAFKA_SASL_USERNAME"),
        ):
            await asyncio.wait_for(ensure_topics(_settings(f"127.0.0.1:{listener.port}")), WAIT_S)

    @pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
    @pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
    async def test_every_client_gets_the_sasl_login_and_tls_context(
        self, mechanism: str, protocol: str, pki: Pki
    ) -> None:
        from jobscore.kafka import make_admin

        tls = {"kafka_ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}
        s = _settings(
            "127.0.0.1:9",
            kafka_security_protocol=protocol,
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="svc-jobscore",
            kafka_sasl_password="s3cret-pw",
            **tls,
        )
        clients = {
            "producer": make_producer(s).client,
            "consumer": make_consumer(s, "g")._client,
            "admin": make_admin(s)._client,
        }
        for name, c in clients.items():
            assert c._security_protocol == protocol, name
            assert c._sasl_mechanism == mechanism, name
            assert c._sasl_plain_username == "svc-jobscore", name
            assert c._sasl_plain_password == "s3cret-pw", name  # the SecretStr's value, not its mask
            if protocol == "SASL_SSL":
                assert isinstance(c._ssl_context, ssl.SSLContext), name
                assert c._ssl_context.verify_mode == ssl.CERT_REQUIRED and c._ssl_context.check_hostname, name
            else:
                assert c._ssl_context is None, name

    def test_settings_refuse_incomplete_security(self, pki: Pki) -> None:
        with pytest.raises(ValueError, match="JOBSCORE_KAFKA_SASL_USERNAME") as err:
            CommonSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_password="leaky-pw")
        assert "leaky-pw" not in str(err.value)  # the rejected input is not echoed
        with pytest.raises(ValueError, match="JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL"):
            CommonSettings(kafka_ssl_cafile=pki.ca)
        with pytest.raises(ValueError, match="both kafka_ssl_certfile and kafka_ssl_keyfile"):
            CommonSettings(kafka_security_protocol="SSL", kafka_ssl_certfile=pki.client_cert)
        assert security_kwargs(CommonSettings().client_config()) == {"security_protocol": "PLAINTEXT"}
