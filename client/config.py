"""Where a client connects and which topics it uses: `ClientConfig`, built in code or from the
environment (the same ``JOBSCORE_*`` variables the services read, so one deployment's settings serve both).

Secrets are never printed (``repr`` hides them) and may come from a file (``*_FILE`` variables), as
container platforms mount them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union, get_args

from schemas import DEAD_LETTERS, POSTINGS, RANKINGS, SCORE_REQUESTS, SCORE_REQUESTS_BULK, SUMMARIES, TopicSpec
from schemas.topics import ALL_TOPICS

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)

ENV_PREFIX = "JOBSCORE_"


@dataclass(frozen=True)
class TopicNames:
    """The physical name of each topic (schemas/topics.py declares the topics; a deployment names them).

    The one place a topic's role meets its name: the services' settings build one of these too."""

    postings: str = "jobscore.postings"
    requests: str = "jobscore.requests"
    requests_bulk: str = "jobscore.requests.bulk"
    rankings: str = "jobscore.rankings"
    dead_letters: str = "jobscore.dead-letters"
    summaries: str = "jobscore.summaries"

    def of(self, spec: TopicSpec[Any]) -> str:
        """The name of the topic ``spec`` declares."""
        return {
            POSTINGS.role: self.postings,
            SCORE_REQUESTS.role: self.requests,
            SCORE_REQUESTS_BULK.role: self.requests_bulk,
            RANKINGS.role: self.rankings,
            DEAD_LETTERS.role: self.dead_letters,
            SUMMARIES.role: self.summaries,
        }[spec.role]

    def bound(self) -> list[tuple[TopicSpec[Any], str]]:
        """Every topic with its name, in the order schemas.topics declares them."""
        return [(spec, self.of(spec)) for spec in ALL_TOPICS]


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the brokers, and the topic names. Checked when built: a bad combination raises
    `ValueError` saying which variable to set."""

    bootstrap: str = "127.0.0.1:9092"
    client_id: str = "jobscore"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True
    topics: TopicNames = field(default_factory=TopicNames)

    def __post_init__(self) -> None:
        proto = self.security_protocol
        if proto not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol={proto!r}: use one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism={self.sasl_mechanism!r}: use one of {', '.join(SASL_MECHANISMS)}")
        if proto.startswith("SASL_") and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"security_protocol={proto} needs a login: set JOBSCORE_KAFKA_SASL_USERNAME and "
                "JOBSCORE_KAFKA_SASL_PASSWORD (or JOBSCORE_KAFKA_SASL_PASSWORD_FILE)"
            )
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if proto not in ("SSL", "SASL_SSL") and any(tls_files):
            raise ValueError(
                f"TLS files are set but security_protocol={proto} does not use TLS: set "
                "JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL), or unset the ssl files"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile and ssl_keyfile")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Read ``JOBSCORE_KAFKA_BOOTSTRAP``, ``JOBSCORE_CLIENT_ID``, ``JOBSCORE_KAFKA_SECURITY_PROTOCOL``,
        ``JOBSCORE_KAFKA_SASL_{MECHANISM,USERNAME,PASSWORD}``, ``JOBSCORE_KAFKA_SSL_{CAFILE,CERTFILE,KEYFILE,
        KEY_PASSWORD,CHECK_HOSTNAME}`` and ``JOBSCORE_TOPIC_{POSTINGS,REQUESTS,REQUESTS_BULK,RANKINGS,
        DEAD_LETTERS,SUMMARIES}``; a secret ``X`` may instead be read from the file named by ``X_FILE``. Unset ones keep
        their defaults; ``overrides`` win over both."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value if value not in (None, "") else None

        def secret(name: str) -> str | None:
            path = get(name + "_FILE")
            if path is not None:
                # One trailing newline is how files are usually written; the secret itself is the rest.
                return Path(path).read_text().removesuffix("\n")
            return get(name)

        kw: dict[str, Any] = {}
        for fld, var in (
            ("bootstrap", "KAFKA_BOOTSTRAP"),
            ("client_id", "CLIENT_ID"),
            ("security_protocol", "KAFKA_SECURITY_PROTOCOL"),
            ("sasl_mechanism", "KAFKA_SASL_MECHANISM"),
            ("sasl_username", "KAFKA_SASL_USERNAME"),
            ("ssl_cafile", "KAFKA_SSL_CAFILE"),
            ("ssl_certfile", "KAFKA_SSL_CERTFILE"),
            ("ssl_keyfile", "KAFKA_SSL_KEYFILE"),
        ):
            value = get(var)
            if value is not None:
                kw[fld] = value
        for fld, var in (("sasl_password", "KAFKA_SASL_PASSWORD"), ("ssl_key_password", "KAFKA_SSL_KEY_PASSWORD")):
            value = secret(var)
            if value is not None:
                kw[fld] = value
        check = get("KAFKA_SSL_CHECK_HOSTNAME")
        if check is not None:
            kw["ssl_check_hostname"] = check.strip().lower() not in ("0", "false", "no", "off")
        topics: dict[str, str] = {}
        for fld in ("postings", "requests", "requests_bulk", "rankings", "dead_letters", "summaries"):
            value = get("TOPIC_" + fld.upper())
            if value is not None:
                topics[fld] = value
        if "rankings" not in topics and get("TOPIC_RESULTS") is not None:
            topics["rankings"] = str(get("TOPIC_RESULTS"))  # the setting's old name, still read (deprecated)
        kw["topics"] = TopicNames(**topics)
        kw.update(overrides)
        return cls(**kw)


class HasClientConfig(Protocol):
    """Anything that can say where to connect: the services' settings are one."""

    def client_config(self) -> ClientConfig: ...


ConfigSource = Union[ClientConfig, HasClientConfig]


def as_config(source: ConfigSource) -> ClientConfig:
    """The `ClientConfig` of ``source`` (itself, or what its ``client_config()`` gives)."""
    return source if isinstance(source, ClientConfig) else source.client_config()
