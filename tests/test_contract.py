"""The language-neutral contract: generated files match the code, README examples match the schemas, and a
client that is not ours (librdkafka via confluent-kafka, messages built from the schema + README only) gets
rankings and dead letters — with their headers — from a real worker on the tiny model."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import yaml

from engine.corpus import postings
from jobscore.settings import CommonSettings, WorkerSettings
from ops.contract import CONTRACT_DIR, asyncapi, drift, message_types, render
from schemas import RANKINGS, SCORE_REQUESTS
from tests.conftest import WAIT_S
from tests.helpers import running, seed
from worker.loop import Worker

README = Path(__file__).resolve().parent.parent / "README.md"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def schema_of(tag: str) -> dict[str, Any]:
    """A committed JSON Schema file: what another team would read."""
    return json.loads((CONTRACT_DIR / f"{tag}.json").read_text())


def validator(tag: str) -> jsonschema.protocols.Validator:
    schema = schema_of(tag)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def readme_examples() -> list[dict[str, Any]]:
    """The raw JSON examples of README's "Wire format" section, in order (request, ranking)."""
    text = README.read_text()
    section = text.split("## Wire format", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", section, re.S)]


# --- the files ---------------------------------------------------------------------------------------


def test_committed_contract_matches_code() -> None:
    problems = drift()
    assert problems == [], "contract drifted from schemas/: run `jobscore contract --write`\n" + "\n".join(problems)


def test_contract_is_the_same_whichever_way_msgspec_renders_docstrings(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec 0.23 dedents a struct's docstring for its description; older releases kept it as written
    (indented continuation lines). A clean clone that installed the other one saw the contract "drift"."""
    import schemas.messages

    real = msgspec.json.schema_components

    def as_written(types: Any, ref_template: str) -> Any:
        roots, components = real(types, ref_template=ref_template)
        for name, comp in components.items():
            cls = getattr(schemas.messages, name, None)
            if "description" in comp and cls is not None and cls.__doc__:
                comp["description"] = cls.__doc__.strip()
        return roots, components

    monkeypatch.setattr(msgspec.json, "schema_components", as_written)
    indented = [t.__name__ for t in message_types() if t.__doc__ and "\n    " in t.__doc__.strip()]
    assert indented, "no message has a multi-line docstring: this test checks nothing"
    assert drift() == []


def test_asyncapi_yaml_reads_back_as_the_document() -> None:
    # Multi-line descriptions are written as literal blocks: the file must still load as the same document.
    assert yaml.safe_load(render()["asyncapi.yaml"]) == json.loads(json.dumps(asyncapi()))


def test_contract_has_a_schema_per_message_and_asyncapi_refs_resolve() -> None:
    files = render()
    tags = [t.__struct_config__.tag for t in message_types()]  # type: ignore[attr-defined]
    assert sorted(files) == sorted([f"{t}.json" for t in tags] + ["asyncapi.yaml"])
    doc = yaml.safe_load(files["asyncapi.yaml"])
    assert doc == json.loads(json.dumps(asyncapi()))
    assert doc["asyncapi"].startswith("3.")
    assert set(doc["channels"]) == {"postings", "requests", "requests-bulk", "rankings", "dead-letters", "summaries"}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    assert part in target, f"dangling $ref {ref}"
                    target = target[part]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    req = doc["components"]["messages"]["score_request_v1"]
    assert req["headers"]["properties"]["traceparent"]["pattern"]
    assert doc["channels"]["requests"]["x-max-value-bytes"] == SCORE_REQUESTS.max_bytes


def test_readme_examples_valid_by_schema_and_by_code() -> None:
    request, ranking = readme_examples()
    validator("score_request.v1").validate(request)
    validator("ranking.v1").validate(ranking)
    # The Python decoders agree with the JSON Schemas on the same bytes.
    assert SCORE_REQUESTS.decode(json.dumps(request).encode()).request_id == request["request_id"]
    decoded = RANKINGS.decode(json.dumps(ranking).encode())
    assert decoded.status == "ok" and decoded.results[0].job_id == ranking["results"][0][0]


@pytest.mark.parametrize(
    "change",
    [
        {"request_id": "has space"},
        {"request_id": "x" * 129},
        {"query": ""},
        {"query": "q" * 2001},
        {"candidates": []},
        {"top_k": 0},
        {"deadline": -1},
        {"schema": "score_request.v9"},
    ],
)
def test_schema_and_decoder_reject_the_same_requests(change: dict[str, Any]) -> None:
    request = {**readme_examples()[0], **change}
    errors = list(validator("score_request.v1").iter_errors(request))
    assert errors, f"JSON Schema accepted {change}"
    with pytest.raises(Exception):  # noqa: B017 - SchemaError of any kind
        SCORE_REQUESTS.decode(json.dumps(request).encode())


# --- a foreign client against a real worker ------------------------------------------------------------


def _confluent_roundtrip(
    bootstrap: str, requests_topic: str, results_topic: str, dlq_topic: str, sends: list[tuple[bytes, bytes, list]]
) -> tuple[list[Any], list[Any]]:
    """Produce with librdkafka, then read results and dead letters (assigned partitions, from the start)
    until a ranking for every valid request and one dead letter have arrived. Returns the records."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
    for key, value, headers in sends:
        producer.produce(requests_topic, value=value, key=key, headers=headers)
    assert producer.flush(WAIT_S) == 0, "librdkafka could not deliver the requests"
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"cf-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(timeout=WAIT_S)
        tps = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in (results_topic, dlq_topic)
            for p in meta.topics[t].partitions
        ]
        consumer.assign(tps)
        rankings: list[Any] = []
        letters: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while (len(rankings) < len(sends) - 1 or not letters) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            (rankings if msg.topic() == results_topic else letters).append(msg)
        return rankings, letters
    finally:
        consumer.close()


@pytest.mark.engine
async def test_confluent_client_from_schema_and_readme_gets_ranking_and_dead_letter_with_headers(
    vllm_engine: Any, worker_settings: Callable[..., WorkerSettings], topics: CommonSettings
) -> None:
    ws = worker_settings()
    items = postings(4, seed=21, prefix=f"{ws.group_id}-job")
    await seed(ws, items)
    # Built from the README example and validated by the committed schema — no jobscore code involved.
    request = readme_examples()[0]
    request |= {
        "request_id": str(uuid.uuid4()),
        "candidates": [p.job_id for p in items] + ["never-posted"],
        "top_k": 3,
        "created_at": time.time(),
        "deadline": time.time() + WAIT_S,
    }
    validator("score_request.v1").validate(request)
    good_headers = [
        ("content-type", b"application/json"),
        ("jobscore-schema", b"score_request.v1"),
        ("traceparent", TRACEPARENT.encode()),
    ]
    bad = {**request, "schema": "score_request.v9", "request_id": "bad-1"}
    bad_headers = [*good_headers[:1], ("jobscore-schema", b"score_request.v9"), ("traceparent", TRACEPARENT.encode())]
    bad_headers.append(("x-tenant", b"acme"))
    sends = [
        (request["request_id"].encode(), json.dumps(request).encode(), good_headers),
        (b"bad-1", json.dumps(bad).encode(), bad_headers),
    ]
    async with running(Worker(ws, vllm_engine)):
        rankings, letters = await asyncio.to_thread(
            _confluent_roundtrip, ws.kafka_bootstrap, ws.topic_requests, ws.topic_rankings, ws.topic_dead_letters, sends
        )
    assert len(rankings) == 1, "the valid request was not answered"
    rec = rankings[0]
    assert rec.key() == request["request_id"].encode()
    ranking = json.loads(rec.value())
    validator("ranking.v1").validate(ranking)
    assert ranking["request_id"] == request["request_id"]
    assert ranking.get("status", "ok") == "ok"
    assert len(ranking["results"]) == 3 and all(isinstance(r, list) and len(r) == 2 for r in ranking["results"])
    assert [e["job_id"] for e in ranking["errors"]] == ["never-posted"]
    headers = dict(rec.headers())
    assert headers["content-type"] == b"application/json"
    assert headers["jobscore-schema"] == b"ranking.v1"
    assert headers["traceparent"] == TRACEPARENT.encode()

    # The dead letter in Kafka Connect's convention, read by a client that knows nothing of this project: the
    # original bytes and key as the record, the reason and the source in `__connect.errors.*` headers, the
    # original's own headers kept untouched.
    assert len(letters) == 1
    assert json.loads(letters[0].value()) == bad and letters[0].key() == b"bad-1"
    dl_headers = {k: v.decode() for k, v in letters[0].headers()}
    assert dl_headers["x-tenant"] == "acme" and dl_headers["traceparent"] == TRACEPARENT
    assert dl_headers["jobscore-schema"] == "score_request.v9" and dl_headers["content-type"] == "application/json"
    assert dl_headers["__connect.errors.topic"] == ws.topic_requests
    assert int(dl_headers["__connect.errors.partition"]) >= 0 and int(dl_headers["__connect.errors.offset"]) >= 0
    assert dl_headers["__connect.errors.stage"] == "VALUE_CONVERTER"
    assert dl_headers["__connect.errors.exception.class.name"] == "jobscore.unknown_schema"
    assert "score_request.v1" in dl_headers["__connect.errors.exception.message"]
    assert dl_headers["jobscore-dlq-kind"] == "unknown_schema" and dl_headers["jobscore-dlq-version"] == "2"
