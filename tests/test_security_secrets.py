"""Secrets stay secret (start-up log line, ``non_defaults()``, ``--help``, metrics, validation errors),
and Redis AUTH + TLS work through ``redis_url`` against a real ``redis-server`` started here with
``--requirepass`` and a TLS port (self-signed CA from tests/security_certs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import REGISTRY, generate_latest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from app.commands import add_settings_flags
from client import publish_postings
from engine.corpus import postings
from jobscore.cache import CacheAuthFailed, CacheUnavailable, SummaryCache
from jobscore.settings import (
    CommonSettings,
    SecretUrl,
    SummarizerSettings,
    WorkerSettings,
    settings_env,
    setup_logging,
)
from ops.devstack import free_port, wait_for_port
from schemas.summary import SummaryRecord
from summarizer.service import Summarizer
from tests.conftest import WAIT_S, RedisServer, wait_until
from tests.security_certs import Pki, make_pki

PASSWORD = "s3cret/p@ss:word"  # needs URL-encoding: the URL form must round-trip
KAFKA_PASSWORD = "kafka-hunter2-pw"
MASK = "**********"


@dataclass(frozen=True)
class SecureRedis:
    port: int
    tls_port: int
    pki: Pki

    def url(self, password: str | None = PASSWORD, tls: bool = False, ca: bool = True, client_cert: bool = True) -> str:
        auth = f":{quote(password, safe='')}@" if password is not None else ""
        if not tls:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        params = [f"ssl_ca_certs={self.pki.ca}"] if ca else []
        if client_cert:  # the TLS port requires client certificates (mutual TLS)
            params += [f"ssl_certfile={self.pki.client_cert}", f"ssl_keyfile={self.pki.client_key}"]
        return f"rediss://{auth}127.0.0.1:{self.tls_port}/0?{'&'.join(params)}"


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    pki = make_pki(tmp_path_factory.mktemp("redis") / "pki")
    tls_port = free_port()
    server = RedisServer(
        args=[
            "--requirepass",
            PASSWORD,
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(pki.server_cert),
            "--tls-key-file",
            str(pki.server_key),
            "--tls-ca-cert-file",
            str(pki.ca),
            "--tls-auth-clients",
            "yes",
        ]
    )
    try:
        server.start()
        assert server.proc is not None
        wait_for_port("127.0.0.1", tls_port, proc=server.proc)
        yield SecureRedis(server.port, tls_port, pki)
    finally:
        server.close()


def _record(job_id: str) -> SummaryRecord:
    return SummaryRecord(
        job_id=job_id,
        version="sec-v1",
        mode="extractive",
        summary="Title: Locksmith.",
        content_hash="h",
        summary_tokens=3,
        raw_tokens=3,
        created_at=0.0,
    )


def _formatted(records: list[logging.LogRecord], fmt: str) -> list[str]:
    """The records as the services print them (jobscore.settings.setup_logging's formatter)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", fmt)  # type: ignore[arg-type]
        formatter = root.handlers[0].formatter
        assert formatter is not None
        return [formatter.format(r) for r in records]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


class TestRedisAuthAndTls:
    async def test_summarizer_writes_and_worker_reads_with_the_password_and_logs_mask_it(
        self,
        secure_redis: SecureRedis,
        summarizer_settings: Callable[..., SummarizerSettings],
        worker_settings: Callable[..., WorkerSettings],
        topics: CommonSettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        s = summarizer_settings(
            redis_url=secure_redis.url(), extractive_embeddings=False, kafka_sasl_password=KAFKA_PASSWORD
        )
        ws = worker_settings(redis_url=secure_redis.url())
        items = postings(5, seed=5, paragraphs=2, prefix=f"{s.group_id}-job")
        svc = Summarizer(s)
        caplog.set_level(logging.INFO)
        await svc.start()
        task = asyncio.create_task(svc.run())
        reader = SummaryCache.for_service(ws, ws.summarizer_version)  # the worker's read path
        try:
            await publish_postings(s, items)

            async def all_read() -> bool:
                return all(isinstance(r, SummaryRecord) for r in await reader.get_many([p.job_id for p in items]))

            await wait_until(all_read, what="summaries written with the password, read back with it")
        finally:
            svc.stop()
            await asyncio.wait_for(task, WAIT_S)
            await svc.close()
            await reader.close()
        started = [r for r in caplog.records if r.getMessage() == "summarizer started"]
        assert started, "the start-up line is logged"
        for fmt in ("text", "json"):
            (line,) = _formatted(started, fmt)
            assert quote(PASSWORD, safe="") not in line and PASSWORD not in line and KAFKA_PASSWORD not in line
            assert f"127.0.0.1:{secure_redis.port}" in line and MASK in line  # what it points at, not the secret
        exposition = generate_latest(REGISTRY).decode()
        assert quote(PASSWORD, safe="") not in exposition and KAFKA_PASSWORD not in exposition

    @pytest.mark.parametrize("password", [None, "wrong-password"])
    async def test_cache_without_the_right_password_fails_saying_what_to_set(
        self, secure_redis: SecureRedis, password: str | None
    ) -> None:
        s = CommonSettings(redis_url=secure_redis.url(password), redis_retry_attempts=3)
        cache = SummaryCache.for_service(s, "sec-v1")
        try:
            with pytest.raises(CacheAuthFailed, match="JOBSCORE_REDIS_URL") as err:
                await asyncio.wait_for(cache.write([_record("j1")]), WAIT_S)
            with pytest.raises(CacheAuthFailed):
                await asyncio.wait_for(cache.get_many(["j1"]), WAIT_S)
        finally:
            await cache.close()
        assert f"127.0.0.1:{secure_redis.port}" in str(err.value) and "wrong-password" not in str(err.value)

    async def test_rediss_url_with_ca_client_certificate_and_password_round_trips_over_tls(
        self, secure_redis: SecureRedis
    ) -> None:
        s = CommonSettings(redis_url=secure_redis.url(tls=True))
        cache = SummaryCache.for_service(s, "sec-v1")
        try:
            await cache.write([_record("tls-1")])
            (rec,) = await cache.get_many(["tls-1"])
            assert isinstance(rec, SummaryRecord) and rec.summary == "Title: Locksmith."
        finally:
            await cache.close()
        # Without the CA the server's certificate is not trusted: the connection is refused.
        untrusted = SummaryCache.for_service(
            CommonSettings(redis_url=secure_redis.url(tls=True, ca=False), redis_retry_attempts=1), "sec-v1"
        )
        try:
            with pytest.raises(Exception, match=r"(?i)certificate"):
                await asyncio.wait_for(untrusted.get_many(["tls-1"]), WAIT_S)
        finally:
            await untrusted.close()
        # Without a client certificate the server (--tls-auth-clients yes) refuses the connection.
        anonymous = SummaryCache.for_service(
            CommonSettings(redis_url=secure_redis.url(tls=True, client_cert=False), redis_retry_attempts=1), "sec-v1"
        )
        try:
            # "tlsv13 alert certificate required" on the first read: a connection error, so an outage
            with pytest.raises(CacheUnavailable):
                await asyncio.wait_for(anonymous.get_many(["tls-1"]), WAIT_S)
        finally:
            await anonymous.close()


class TestSecretsNeverShown:
    def test_settings_env_hands_a_child_process_the_real_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # What tests and `jobscore bench-soak` give the `jobscore` processes they start: the real secret (not
        # the mask), booleans, and every other value read back equal by the child's own settings class.
        s = WorkerSettings(
            redis_url=f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:6379/0", max_records=3, enforce_eager=True
        )
        env = settings_env(s, JOBSCORE_MAX_BATCH_ITEMS="7")
        assert MASK not in env["JOBSCORE_REDIS_URL"] and env["JOBSCORE_ENFORCE_EAGER"] == "true"
        for k in [k for k in os.environ if k.startswith("JOBSCORE_")]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        child = WorkerSettings()
        assert child.redis_url.get_secret_value() == s.redis_url.get_secret_value()
        assert child.model_dump() == {**s.model_dump(), "max_batch_items": 7}

    def test_non_defaults_repr_and_json_mask_every_secret(self, tmp_path: Path) -> None:
        s = CommonSettings(
            redis_url=f"rediss://app:{quote(PASSWORD, safe='')}@cache.internal:6380/0?ssl_keyfile_password=kp",
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="svc",
            kafka_sasl_password=KAFKA_PASSWORD,
            kafka_ssl_key_password="keypass-xyz",
        )
        nd = s.non_defaults()
        assert nd["redis_url"] == f"rediss://app:{MASK}@cache.internal:6380/0?ssl_keyfile_password={MASK}"
        assert nd["kafka_sasl_password"] == MASK and nd["kafka_ssl_key_password"] == MASK
        assert nd["kafka_sasl_username"] == "svc"  # not a secret: shown, so operators can check it
        for shown in (str(nd), repr(s), str(s), s.model_dump_json()):
            for secret in (quote(PASSWORD, safe=""), PASSWORD, KAFKA_PASSWORD, "keypass-xyz", "=kp"):
                assert secret not in shown
        # The values are still there for the clients that need them.
        assert s.kafka_sasl_password is not None and s.kafka_sasl_password.get_secret_value() == KAFKA_PASSWORD
        assert quote(PASSWORD, safe="") in s.redis_url.get_secret_value()

    def test_help_shows_secret_defaults_masked(self) -> None:
        class WithSecretDefaults(BaseSettings):
            token: SecretStr = Field(SecretStr("default-token-value"), description="An API token.")
            url: SecretUrl = Field(SecretUrl(f"redis://:{KAFKA_PASSWORD}@h:6379/0"), description="A URL.")

        p = argparse.ArgumentParser(prog="x")
        add_settings_flags(p, WithSecretDefaults)
        text = p.format_help()
        assert "default-token-value" not in text and KAFKA_PASSWORD not in text
        assert f"default {MASK}]" in text and f"redis://:{MASK}@h:6379/0" in text

    def test_cli_help_never_shows_secrets_from_the_environment(self) -> None:
        env = {
            **os.environ,
            "JOBSCORE_REDIS_URL": f"redis://:{KAFKA_PASSWORD}@h:1/0",
            "JOBSCORE_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        }
        for cmd in ("worker", "summarizer"):
            out = subprocess.run(
                [sys.executable, "-m", "app.cli", cmd, "--help"], env=env, capture_output=True, text=True, timeout=120
            )
            assert out.returncode == 0, out.stderr
            assert "--kafka-sasl-password" in out.stdout and "--redis-url" in out.stdout
            assert KAFKA_PASSWORD not in out.stdout + out.stderr

    def test_cli_refuses_incomplete_security_without_traceback_or_secret(self) -> None:
        env = {
            **os.environ,
            "JOBSCORE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "JOBSCORE_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        }
        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "summarizer"], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode != 0
        assert "JOBSCORE_KAFKA_SASL_USERNAME" in out.stderr and "Traceback" not in out.stderr
        assert KAFKA_PASSWORD not in out.stdout + out.stderr

    def test_rejected_settings_do_not_echo_secrets(self) -> None:
        with pytest.raises(ValueError) as err:
            WorkerSettings(redis_url=f"redis://:{KAFKA_PASSWORD}@h:1/0", max_candidates=-1)
        assert "max_candidates" in str(err.value) and KAFKA_PASSWORD not in str(err.value)
