"""Typed settings, one frozen object per process. Every field reads ``JOBSCORE_<NAME>`` from the
environment; command-line flags override it. Docstrings state the trade-off a deployment is making.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client.config import ClientConfig, TopicNames
from schemas.messages import MAX_DEAD_LETTER_ORIGINAL_BYTES, SummaryMode

log = logging.getLogger(__name__)


MASK = "**********"  # what pydantic's SecretStr shows instead of a secret


def mask_url(url: str) -> str:
    """``url`` with its password (userinfo) and any ``*password*`` query value replaced by ``MASK``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{k}={MASK}" if "password" in k.lower() else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class SecretUrl(SecretStr):
    """A URL that may carry a password (``redis://:PASSWORD@host:6379/0``): kept like a `SecretStr`
    (``.get_secret_value()`` to use it) but displayed with only the password masked, so logs and
    ``--help`` still say which host it points at."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


# Settings of how a deployment runs (topic creation, consumer-group timing, health, retries): each command
# accepts them, but only the services' and `jobscore topics`' --help list them; other commands show them with
# --help-all (app/commands.py). Topic *names* and connection settings are everyone's.
DEPLOYMENT_SETTINGS = frozenset(
    {
        "topic_partitions",
        "topic_replication_factor",
        "topic_min_insync_replicas",
        "topic_postings_compact",
        "topic_retention_ms_postings",
        "topic_retention_ms_requests",
        "topic_retention_ms_rankings",
        "topic_retention_ms_dead_letters",
        "topic_message_headroom_bytes",
        "enable_idempotence",
        "session_timeout_ms",
        "metrics_port",
        "liveness_timeout_s",
        "health_probe_interval_s",
        "heartbeat_interval_ms",
        "max_poll_interval_ms",
        "rebalance_timeout_ms",
        "dead_letter_max_original_bytes",
        "redis_retry_attempts",
        "redis_retry_max_s",
        "kafka_send_attempts",
        "kafka_send_retry_max_s",
    }
)
# Secrets that are never flags (a flag shows in `ps` and shell history): the environment, or a file named by
# `--<name>-file` / JOBSCORE_<NAME>_FILE (how container platforms mount secrets).
SECRET_SETTINGS = ("kafka_sasl_password", "kafka_ssl_key_password")


# Closed sets, named once (flags list them as choices).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ToolSettings(BaseSettings):
    """What every command has: logging and where built models live (offline tools need nothing more)."""

    # hide_input_in_errors: a rejected setting's error must not echo the input, which holds secrets
    # (a SASL password next to a missing user name, a Redis URL with its password).
    model_config = SettingsConfigDict(env_prefix="JOBSCORE_", frozen=True, extra="forbid", hide_input_in_errors=True)

    log_level: LogLevel = Field("INFO", description="Log level.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v  # JOBSCORE_LOG_LEVEL=debug works too

    log_format: Literal["json", "text"] = Field("text", description="json for collectors, text for people.")
    cache_dir: Path = Field(Path.home() / ".cache" / "jobscore", description="Models built here live here.")

    def non_defaults(self) -> dict[str, Any]:
        """Settings that differ from their defaults, for the start-up log line. Secrets (`SecretStr`)
        appear as their masked display only (``**********``, or a URL with its password masked)."""
        out: dict[str, Any] = {}
        for name, f in type(self).model_fields.items():
            v = getattr(self, name)
            if v != f.default:
                out[name] = str(v) if isinstance(v, SecretStr) else v
        return out


# Old setting name → new: read for a deprecation period by CommonSettings._renamed_settings.
RENAMED_SETTINGS = {"topic_results": "topic_rankings", "topic_retention_ms_results": "topic_retention_ms_rankings"}


class CommonSettings(ToolSettings):
    """Settings of the commands that talk to the broker and Redis."""

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    redis_url: SecretUrl = Field(
        SecretUrl("redis://127.0.0.1:6379/0"),
        description="Redis holding the summary cache. AUTH: redis://[USER]:PASSWORD@host:6379/0; TLS: "
        "rediss://…?ssl_ca_certs=/ca.pem (also ssl_certfile, ssl_keyfile, ssl_cert_reqs). The password is "
        "masked wherever the URL is shown.",
    )
    # --- Kafka transport security: every client gets these through client.kafka.security_kwargs ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="SSL: TLS to the brokers; SASL_SSL: TLS + SASL login (production); SASL_PLAINTEXT: login "
        "without encryption (the password crosses the network in the clear with PLAIN).",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism (SASL_* protocols). SCRAM never sends the password; PLAIN does, so use it "
        "only with SASL_SSL.",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name (SASL_* protocols).")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (SASL_* protocols). Prefer the environment variable to the flag."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM bundle of the CA(s) that signed the brokers' certificates; default: system CAs."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for brokers that require mutual TLS; needs kafka_ssl_keyfile."
    )
    kafka_ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of kafka_ssl_certfile.")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted kafka_ssl_keyfile.")
    kafka_ssl_check_hostname: bool = Field(
        True,
        description="Check that the broker certificate names the host connected to. Turn off only for "
        "certificates issued to other names (it still checks the CA signature).",
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``<secret>_file`` (a flag) or ``JOBSCORE_<SECRET>_FILE``: the secret is the file's content (one
        trailing newline dropped); a secret given directly wins."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_SETTINGS:
            path = data.pop(f"{name}_file", None) or os.environ.get(f"JOBSCORE_{name.upper()}_FILE") or None
            if path is not None and data.get(name) is None:
                try:
                    data[name] = Path(path).read_text().removesuffix("\n")
                except OSError as e:
                    raise ValueError(f"{name}_file: cannot read {path}: {e.strerror}") from None
        return data

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data: Any) -> Any:
        """Settings renamed for one word per topic ("results" → "rankings"): the old names, as keyword or
        ``JOBSCORE_*`` variable, still work for a while, with a warning saying the new name."""
        if not isinstance(data, dict):
            return data
        for old, new in RENAMED_SETTINGS.items():
            given = data.pop(old, None)
            if given is None:
                given = os.environ.get(f"JOBSCORE_{old.upper()}") or None
            if given is not None:
                logging.getLogger("jobscore").warning(
                    f"setting {old} (JOBSCORE_{old.upper()}) is renamed {new} (JOBSCORE_{new.upper()}); "
                    "the old name will stop working in a later release"
                )
                data.setdefault(new, given)
        return data

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        mode="before",
    )
    @classmethod
    def _empty_security_is_none(cls, v: object) -> object:
        # JOBSCORE_KAFKA_SSL_CAFILE= (empty) in a deployment template means "not set".
        return None if v == "" else v

    @model_validator(mode="after")
    def _check_kafka_security(self) -> CommonSettings:
        """Refuse combinations that could only fail later, at the first connection, less clearly."""
        proto = self.kafka_security_protocol
        if proto.startswith("SASL_") and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"kafka_security_protocol={proto} needs a login: set JOBSCORE_KAFKA_SASL_USERNAME and "
                "JOBSCORE_KAFKA_SASL_PASSWORD (and JOBSCORE_KAFKA_SASL_MECHANISM if not SCRAM-SHA-512)"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not proto.endswith("SSL") and any(f is not None for f in tls_files):
            raise ValueError(
                f"TLS files are set but kafka_security_protocol={proto} does not use TLS: set "
                "JOBSCORE_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL), or unset the kafka_ssl_* files"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("mutual TLS needs both kafka_ssl_certfile and kafka_ssl_keyfile")
        for name, f in zip(("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"), tls_files, strict=True):
            if f is not None and not f.is_file():
                raise ValueError(f"{name}={f} is not a readable file")
        return self

    topic_postings: str = Field("jobscore.postings", description="Job postings (JobPosted) topic.")
    topic_requests: str = Field("jobscore.requests", description="Scoring requests (ScoreRequest) topic.")
    topic_requests_bulk: str = Field(
        "jobscore.requests.bulk",
        description="Bulk-lane scoring requests (backfills): workers take them only with spare capacity.",
    )
    topic_rankings: str = Field("jobscore.rankings", description="Rankings (Ranking) topic.")
    topic_dead_letters: str = Field("jobscore.dead-letters", description="Dead letters (DeadLetter) topic.")
    topic_summaries: str = Field(
        "jobscore.summaries",
        description="Summary readiness (JobSummarized) topic, compacted by job id: clients wait on it to know a "
        "posting is scorable.",
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions when this tool creates a topic.")

    def topic_names(self) -> TopicNames:
        """The topics' names: the one binding of topic roles to these settings."""
        return TopicNames(
            postings=self.topic_postings,
            requests=self.topic_requests,
            requests_bulk=self.topic_requests_bulk,
            rankings=self.topic_rankings,
            dead_letters=self.topic_dead_letters,
            summaries=self.topic_summaries,
        )

    def client_config(self) -> ClientConfig:
        """What every Kafka client of ours is built from (client/kafka.py): address, security, topic names."""
        return ClientConfig(
            bootstrap=self.kafka_bootstrap,
            client_id=self.client_id,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None,
            ssl_cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
            ssl_certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
            ssl_keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
            ssl_key_password=self.kafka_ssl_key_password.get_secret_value() if self.kafka_ssl_key_password else None,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
            topics=self.topic_names(),
        )

    # --- topic plan (`jobscore topics`, jobscore/topics.py): how topics are created, not which exist ---
    topic_replication_factor: int = Field(
        1,
        ge=1,
        description="Replicas per partition when topics are created. 1 suits a single dev broker only: "
        "`jobscore topics` refuses it against a multi-broker cluster (acks=all would wait for one copy). "
        "Production: 3.",
    )
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of every topic: how many copies acks=all waits for. Default: "
        "replication factor - 1 (at least 1), so one broker may be down without blocking producers.",
    )
    topic_postings_compact: bool = Field(
        True,
        description="Compact the postings topic (keyed by job id): the latest version of every posting stays "
        "forever, so a new summarizer version can backfill from it. Off: delete after topic_retention_ms_postings.",
    )
    topic_retention_ms_postings: int = Field(
        7 * 24 * 3_600_000, ge=-1, description="Postings retention when not compacted (-1 = forever)."
    )
    topic_retention_ms_requests: int = Field(
        3 * 24 * 3_600_000,
        ge=-1,
        description="Requests retention: how long an outage may last before unanswered requests are lost.",
    )
    topic_retention_ms_rankings: int = Field(
        3 * 24 * 3_600_000, ge=-1, description="Rankings retention: how late a publisher may read its answers."
    )
    topic_retention_ms_dead_letters: int = Field(
        14 * 24 * 3_600_000, ge=-1, description="Dead-letter retention: time to investigate and re-drive."
    )
    topic_message_headroom_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="max.message.bytes = the topic's largest value (schemas/topics.py max_bytes) + this, for "
        "the key, headers and record-batch framing.",
    )
    enable_idempotence: bool = Field(
        False,
        description="Idempotent producer. Turn on with real Kafka; the embedded tansu broker rejects it. "
        "Rankings are keyed and idempotent by request id either way.",
    )
    client_id: str = Field("jobscore", description="Kafka client id prefix.")
    session_timeout_ms: int = Field(
        10_000,
        ge=3_000,
        description="Consumer group session timeout: how fast a dead consumer's partitions move to another. "
        "Longer rides out pauses; shorter recovers faster (a group join also waits about half of it).",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz (jobscore/health.py); 0 disables it."
    )
    liveness_timeout_s: float = Field(
        60.0,
        gt=0,
        description="/healthz fails once the service loop has not iterated for this long (the process is "
        "restarted). Keep it above the longest stall you accept: a poll plus one batch's Redis round trip.",
    )
    health_probe_interval_s: float = Field(
        2.0,
        gt=0,
        description="How often /readyz's broker and Redis checks are probed (also each probe's timeout). "
        "Shorter notices an outage and its end sooner, at one metadata request + one PING per interval.",
    )
    # --- faults and recovery (docs/operating.md "Faults and recovery") ---------------------------------------------
    heartbeat_interval_ms: int | None = Field(
        None,
        ge=100,
        description="Consumer heartbeat interval. Default: session_timeout_ms / 5 (at least 500). Must be <= "
        "session_timeout_ms / 3, or one lost heartbeat evicts the member.",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="Longest time between two polls before the consumer leaves its group (its partitions move). "
        "Must exceed the worst time of one poll's work (summarizer: a batch of postings; worker: a Redis "
        "fetch with its retries).",
    )
    rebalance_timeout_ms: int | None = Field(
        None,
        ge=1_000,
        description="How long the group waits for members to hand over partitions in a rebalance. Default: "
        "the worker's drain_timeout_s + 5 s (at least session_timeout_ms), so a revoke's drain finishes "
        "before the member is evicted mid-handover.",
    )
    dead_letter_max_original_bytes: int = Field(
        MAX_DEAD_LETTER_ORIGINAL_BYTES,
        ge=0,
        le=MAX_DEAD_LETTER_ORIGINAL_BYTES,
        description="A dead letter keeps at most this many bytes of the original value; longer ones are cut "
        "(the letter records truncated, original_size and original_sha256), so a dead letter always fits "
        "the dead-letter topic.",
    )
    redis_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Redis socket and connect timeout: how long a stalled Redis blocks one call before it "
        "counts as an error and is retried.",
    )
    redis_retry_attempts: int = Field(
        4,
        ge=1,
        description="Tries of one Redis call (exponential backoff with jitter between them) before the service "
        "treats Redis as down: not ready, and the call is retried by the service's outage policy "
        "(docs/operating.md 'Faults and recovery'); neither service exits.",
    )
    redis_retry_max_s: float = Field(
        2.0, gt=0, description="Longest backoff between two tries of a Redis call (the cap of 2^n growth)."
    )
    kafka_send_attempts: int = Field(
        5,
        ge=1,
        description="Tries of one produce (rankings, dead letters) before the worker checks the topics, goes "
        "not ready and stops without committing the record (the group replays it).",
    )
    kafka_send_retry_max_s: float = Field(
        2.0,
        gt=0,
        description="Longest backoff between two tries of one produce (the cap of 2^n growth). Its own setting: a "
        "partition leader election takes seconds, a Redis restart may take less or more.",
    )

    def drain_budget_s(self) -> float:
        """How long this service may take to hand over revoked partitions (the worker drains)."""
        return 0.0

    def poll_work_worst_ms(self) -> tuple[float, str]:
        """Worst time of one poll's work, and what it is made of (for the validator's message)."""
        redis_ms = self.redis_retry_attempts * (self.redis_timeout_s + self.redis_retry_max_s) * 1e3
        return redis_ms, f"{self.redis_retry_attempts} Redis tries x (redis_timeout_s + redis_retry_max_s)"

    def consumer_timeouts(self) -> ConsumerTimeouts:
        """The consumer group timeouts, derived in one place (make_consumer uses them)."""
        session = self.session_timeout_ms
        heartbeat = self.heartbeat_interval_ms or max(500, session // 5)
        rebalance = self.rebalance_timeout_ms or max(session, int(self.drain_budget_s() * 1e3) + REBALANCE_MARGIN_MS)
        return ConsumerTimeouts(session, heartbeat, rebalance, self.max_poll_interval_ms)

    @model_validator(mode="after")
    def _timeouts_agree(self) -> Self:
        t = self.consumer_timeouts()
        problems = []
        if t.heartbeat_ms * 3 > t.session_ms:
            problems.append(
                f"heartbeat_interval_ms={t.heartbeat_ms} is over session_timeout_ms/3={t.session_ms // 3}: one late "
                "heartbeat would evict the member; lower heartbeat_interval_ms or raise session_timeout_ms"
            )
        drain_ms = self.drain_budget_s() * 1e3
        if drain_ms > t.rebalance_ms:
            problems.append(
                f"drain_timeout_s={self.drain_budget_s():g} (x1000 = {drain_ms:.0f} ms) exceeds rebalance_timeout_ms="
                f"{t.rebalance_ms}: a revoke's drain would outlast the rebalance and the member be evicted "
                "mid-handover; raise rebalance_timeout_ms (or leave it unset) or lower drain_timeout_s"
            )
        worst_ms, made_of = self.poll_work_worst_ms()
        if worst_ms >= t.max_poll_ms:
            problems.append(
                f"max_poll_interval_ms={t.max_poll_ms} is below the worst time of one poll's work ({made_of} = "
                f"{worst_ms:.0f} ms): the group would evict a busy member; raise max_poll_interval_ms or shrink "
                "the work per poll"
            )
        if problems:
            raise ValueError("inconsistent timeouts: " + "; ".join(problems))
        return self


# Rebalance timeout beyond the drain: time to commit and send the SyncGroup after the drain ends.
REBALANCE_MARGIN_MS = 5_000


class ConsumerTimeouts(NamedTuple):
    session_ms: int
    heartbeat_ms: int
    rebalance_ms: int
    max_poll_ms: int


# Worst seconds to summarize one posting, by mode, for the poll-interval check: ~2.5x the mean on the 2-core
# CPU host (bench/RESULTS.md: 9.5, 5.4 and 0.48 postings/s for extractive, hybrid, abstractive).
SUMMARIZE_WORST_S_PER_POSTING: dict[str, float] = {"extractive": 0.25, "hybrid": 0.5, "abstractive": 5.0}


class SummarizerSettings(CommonSettings):
    group_id: str = Field("jobscore-summarizer", description="Consumer group of the summarizer.")
    metrics_port: int = Field(
        9101,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz (docs/operating.md 'Health endpoints'); 0 turns them "
        "off. The worker's default is 9100, so both run on one host as they are.",
    )
    summarizer_version: str = Field(
        "extractive-v1",
        description="Version written into cache keys. Bump it when the summarizer changes so workers "
        "configured for the new version never read summaries of the old one.",
    )
    summary_budget_tokens: int = Field(128, ge=16, le=4096, description="Token budget of a summary.")
    summary_ttl_s: int = Field(
        60 * 60 * 24 * 60, ge=0, description="Summary TTL in Redis (0 = keep forever). Default 60 days."
    )
    max_records: int = Field(256, ge=1, description="Postings fetched per poll (one Redis pipeline).")
    summarizer_mode: SummaryMode = Field(
        "extractive",
        description="How postings are compressed; recorded in every cache entry. extractive: the best "
        "sentences under the budget (cheap, faithful); hybrid: parsed fields (title, seniority, ESCO skills, "
        "location, remote, salary) + a short extract in a fixed template; abstractive: a decoder SLM in vLLM "
        "writes the summary (fluent, ~100x slower on CPU, may drop or invent details).",
    )
    extractive_embeddings: bool = Field(
        True,
        description="Rank sentences by MiniLM similarity to the title/skills with MMR for diversity "
        "(extractive and hybrid). Off: keyword heuristics only (several times faster, slightly less on topic).",
    )
    mmr_lambda: float = Field(
        0.7, ge=0.0, le=1.0, description="MMR trade-off: 1 = pure relevance, lower = more diverse sentences."
    )
    abstractive_model: Path | None = Field(
        None, description="HF decoder directory for abstractive mode; default: packaged SmolLM2-135M-Instruct."
    )
    abstractive_max_input_tokens: int = Field(
        1536,
        ge=64,
        description="Posting tokens the abstractive model reads (the rest is cut). Longer is slower to prefill.",
    )
    summarize_batch_size: int = Field(
        32,
        ge=1,
        description="Postings per summarizer call. Bounds the work between commits: keep batch time well "
        "under the consumer's max poll interval (abstractive on CPU: ~1-2 postings/s).",
    )
    store_raw: bool = Field(
        False,
        description="Also store the raw description (cut to raw_max_chars) in each entry, so workers can "
        "fall back to scoring raw text. Costs Redis memory (~raw_max_chars bytes per job).",
    )
    raw_max_chars: int = Field(8000, ge=64, description="Cap on the stored raw description (store_raw).")
    budget_tokenizer: Path | None = Field(
        None,
        description="Tokenizer directory (the scorer's) to count summary_budget_tokens exactly. Default: an "
        "estimate (~1.3 tokens per word), which overshoots a real BPE count by up to ~15% on some summaries.",
    )

    def poll_work_worst_ms(self) -> tuple[float, str]:
        # The service polls one summarize chunk at a time in abstractive mode (summarizer/service.py).
        n = self.max_records
        if self.summarizer_mode == "abstractive":
            n = min(self.max_records, self.summarize_batch_size)
        per = SUMMARIZE_WORST_S_PER_POSTING[self.summarizer_mode]
        redis_ms, redis_what = super().poll_work_worst_ms()
        return n * per * 1e3 + redis_ms, f"{n} postings x {per:g} s ({self.summarizer_mode}) + {redis_what}"

    @field_validator("abstractive_model", "budget_tokenizer", mode="before")
    @classmethod
    def _empty_model_is_none(cls, v: object) -> object:
        return None if v in ("", None) else v


class WorkerSettings(CommonSettings):
    group_id: str = Field("jobscore-worker", description="Consumer group of the scoring workers.")
    tracing: bool = Field(
        False,
        description="OpenTelemetry spans per request (consume → summaries → score → publish, children of the "
        "request's traceparent) and per engine batch (linked to its requests); jobscore/tracing.py.",
    )
    tracing_exporter: Literal["otlp", "console", "none"] = Field(
        "otlp",
        description="Where spans go with tracing on: otlp (OTEL_EXPORTER_OTLP_* variables; needs "
        "opentelemetry-exporter-otlp-proto-http), console (stdout) or none.",
    )
    metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz (docs/operating.md 'Health endpoints'); 0 turns them "
        "off. Several workers on one host need one port each.",
    )
    model: Path | None = Field(
        None,
        description="What scores: an HF model directory (a compress-sft output, a merged adapter), or a shipped "
        "scorer: 'scorer-pruned' (the default, also 'scorer'): the OSSCAR-pruned relevance scorer rebuilt from "
        "engine/scorer_pruned; 'scorer-full': SmolLM2-135M-Instruct + the LoRA adapter in engine/scorer, unpruned; "
        "both built on first use under cache_dir (docs/models.md 'Models'); 'tiny': the random-weight test model "
        "(plumbing tests only, its scores mean nothing).",
    )
    engine: Literal["vllm", "hf"] = Field("vllm", description="vllm (production) or hf (naive baseline).")
    dtype: Dtype = Field("auto", description="Engine dtype: auto, float32, bfloat16, float16.")
    max_model_len: int = Field(2048, ge=64, description="Longest prompt in tokens the engine accepts.")
    enable_prefix_caching: bool = Field(True, description="Reuse the shared query prefix's KV cache.")
    kv_block_size: int | None = Field(
        None,
        ge=1,
        description="vLLM KV-cache block size in tokens. Prefix caching reuses whole blocks only, so the shared "
        "[instruction + query] part must fill at least one. Unset: 32 on the CPU backend (its own default, 128, is "
        "longer than the shared part: nothing was reused; measured 1.93x with 32), vLLM's default on GPUs. CPU "
        "needs a multiple of 32.",
    )
    engine_step_tokens: int | None = Field(
        None,
        ge=64,
        description="Most prompt tokens vLLM computes in one engine step (its max_num_batched_tokens; longer "
        "prompts are prefilled over several steps). An online prompt waits for the step in progress, so a smaller "
        "step bounds what a backfill adds to online latency; a larger one raises throughput. Unset: vLLM's default "
        "(4096 on CPU).",
    )
    enforce_eager: bool = Field(
        False,
        description="Skip vLLM's torch.compile warm-up: the engine starts ~10 s sooner on CPU (measured on 2 cores, "
        "tiny model) but scores slower. For short-lived workers and tests; leave off for serving.",
    )
    summarizer_version: str = Field("extractive-v1", description="Which summaries (cache version) to read.")
    max_candidates: int = Field(1000, ge=1, le=10_000, description="Largest request accepted.")
    max_summary_chars: int = Field(
        4000, ge=64, description="Longer cached summaries are reported as 'oversized', not scored."
    )
    max_records: int = Field(64, ge=1, description="Online requests fetched per poll.")
    max_bulk_records: int = Field(
        4,
        ge=1,
        description="Bulk-lane requests fetched per poll (after the online ones). Few: a bulk request can hold "
        "hundreds of candidates, and taking them in (Redis, tokenizing) delays the next online poll.",
    )
    poll_timeout_ms: int = Field(50, ge=1, description="How long a poll waits for the first record.")
    max_batch_tokens: int = Field(
        16_384,
        ge=64,
        description="Engine batch token budget across requests. Larger keeps a GPU busy; smaller cuts latency.",
    )
    max_batch_items: int = Field(512, ge=1, description="Most query-candidate pairs per engine batch.")
    max_bulk_batch_items: int = Field(
        32,
        ge=1,
        description="Most bulk-lane pairs per engine batch. With vLLM, online prompts go ahead of bulk ones inside "
        "the engine (engine_batches_in_flight); with an engine that takes one batch at a time (hf), an online request "
        "waits for the batch in progress, so a small bulk share bounds the latency a backfill adds; larger raises "
        "bulk throughput.",
    )
    engine_batches_in_flight: int = Field(
        2,
        ge=1,
        description="Batches the engine holds at once when it schedules by priority (vLLM): it shares its steps "
        "between them and stays busy while the worker ranks and publishes; one online batch may go beyond this, "
        "and its prompts go ahead of every waiting bulk prompt inside the engine. Other engines take one at a time.",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a queued pair waits for a fuller batch before the engine takes it."
    )
    max_queued_items: int = Field(
        8_192,
        ge=1,
        description="Backpressure: partitions pause at this many queued pairs, resume at half. Bounds memory "
        "and the drain time on rebalance/shutdown.",
    )
    prompt_layout: Literal["query_first", "doc_first"] = Field(
        "query_first",
        description="query_first shares the [instruction + query] prefix across a request's candidates "
        "(prefix caching); doc_first exists to measure that gain.",
    )
    max_doc_tokens: int = Field(
        512, ge=8, description="Candidate text is cut to this many tokens (and to what fits max_model_len)."
    )
    missing_summary: Literal["error", "raw"] = Field(
        "error",
        description="A candidate without a summary: 'error' reports it in the ranking (missing_summary); 'raw' "
        "scores its raw description cut to raw_fallback_tokens, when the cache has one (summarizer store_raw).",
    )
    raw_fallback_version: str | None = Field(
        None,
        description="Cache version to take raw descriptions from for the 'raw' fallback (default: "
        "summarizer_version). Set it to the previous version while a new summarizer version backfills.",
    )
    raw_fallback_tokens: int = Field(256, ge=8, description="Token budget of a raw-description fallback.")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On shutdown/revoke, how long in-flight work may take to finish and commit."
    )
    instruction: str | None = Field(None, description="Override the task instruction in the prompt.")
    score_cache_ttl_s: int = Field(
        0,
        ge=0,
        description="Score cache: keep each scored pair's P(yes) in Redis this long and answer repeats from it "
        "(keyed by model id/revision/dtype and the exact prompt tokens). 0 = off. Lookups cost one MGET per poll; "
        "worth it when pairs repeat (paging, retried backfills, popular queries).",
    )

    def drain_budget_s(self) -> float:
        return self.drain_timeout_s

    @field_validator("model", mode="before")
    @classmethod
    def _empty_model_is_none(cls, v: object) -> object:
        return None if v in ("", None) else v


def settings_env(s: ToolSettings, **extra: str) -> dict[str, str]:
    """This process's environment plus the ``JOBSCORE_*`` variables that make a `jobscore` child process use
    exactly these settings: secrets unwrapped, booleans as true/false, lists and dicts as JSON (what
    pydantic-settings parses back), unset (None) values left out. ``extra`` variables win."""
    env = dict(os.environ)
    for name in type(s).model_fields:
        v = getattr(s, name)
        if v is None:
            continue
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if isinstance(v, bool):
            env[f"JOBSCORE_{name.upper()}"] = "true" if v else "false"
        elif isinstance(v, list | dict):
            env[f"JOBSCORE_{name.upper()}"] = json.dumps(v)
        else:
            env[f"JOBSCORE_{name.upper()}"] = str(v)
    env.update(extra)
    return env


class RepeatFilter(logging.Filter):
    """One line per message template per ``interval_s`` from client libraries (aiokafka, kafka, redis).

    They retry a dead broker about ten times a second and log every try at ERROR (~80 lines/s were seen);
    our own code logs an outage once when it starts and once when it ends (jobscore/retry.py). The first
    line of a burst passes; the next passing line says how many were dropped in between.
    """

    def __init__(self, interval_s: float = 30.0, prefixes: tuple[str, ...] = ("aiokafka", "kafka", "redis")) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.prefixes = prefixes
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        import time

        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.repeated = dropped  # shown as a field: "repeated=N" (text) / "repeated": N (json)
        return True


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Structured logs: one JSON object per line (``fmt='json'``), or key=value text for people."""
    import json
    import time

    reserved = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            extra = {k: v for k, v in record.__dict__.items() if k not in reserved and not k.startswith("vllm_")}
            if fmt == "json":
                doc = {
                    "ts": round(record.created, 3),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": record.getMessage(),
                    **extra,
                }
                if record.exc_info:
                    doc["exc"] = self.formatException(record.exc_info)
                return json.dumps(doc, default=str)
            ts = time.strftime("%H:%M:%S", time.localtime(record.created))
            kv = " ".join(f"{k}={v}" for k, v in extra.items())
            line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f" {kv}" if kv else "")
            if record.exc_info:
                line += "\n" + self.formatException(record.exc_info)
            return line

    handler = logging.StreamHandler()
    handler.setFormatter(Formatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "vllm", "transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
