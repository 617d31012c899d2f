"""OpenTelemetry spans of the worker's data path, off unless ``tracing`` is on (`WorkerSettings.tracing`).

Per scoring request, a ``jobscore.request`` span — a child of the caller's W3C ``traceparent`` when the request
record carries one, so one trace runs from the publisher through the worker — with children for the stages the
request went through: ``jobscore.fetch_summaries`` (the Redis read of its poll), ``jobscore.score`` (from
entering the batcher to its last scored candidate) and ``jobscore.publish`` (until the ranking is acknowledged).
Engine batches serve many requests at once, so each is a ``jobscore.engine_batch`` span *linked* to the request
spans it served (a batch has no single parent), as OpenTelemetry's messaging conventions do for batches.

Export: ``tracing_exporter`` "otlp" (the OTLP exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables; needs ``opentelemetry-exporter-otlp``), "console" (spans as JSON on stdout) or "none" (spans are
made and dropped: for a test's in-memory exporter, or to measure the overhead).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()


def provider_for(service: str, exporter: str) -> TracerProvider:
    """A tracer provider of this service with the named exporter attached (module docstring)."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"jobscore-{service}"}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise RuntimeError(
                "tracing_exporter=otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http "
                "(or set JOBSCORE_TRACING_EXPORTER=console / none)"
            ) from e
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Tracing:
    """The worker's spans; every method is a no-op returning None when tracing is off."""

    def __init__(self, provider: Any | None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("jobscore.worker") if provider is not None else None

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    def request(self, headers: Iterable[tuple[str, bytes]], request_id: str, lane: str, candidates: int) -> Any:
        """The span of one request, a child of its record's ``traceparent`` (if any)."""
        if self.tracer is None:
            return None
        carrier = {k.lower(): v.decode("latin-1") for k, v in headers if k.lower() in ("traceparent", "tracestate")}
        parent: Context = _PROPAGATOR.extract(carrier)
        return self.tracer.start_span(
            "jobscore.request",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={"jobscore.request_id": request_id, "jobscore.lane": lane, "jobscore.candidates": candidates},
        )

    def stage(self, parent: Any, name: str, start_ns: int | None = None) -> Any:
        """A child span of a request span (``start_ns``: when the stage began, if before now)."""
        if self.tracer is None or parent is None:
            return None
        return self.tracer.start_span(name, context=trace.set_span_in_context(parent), start_time=start_ns)

    def batch(self, request_spans: Sequence[Any], items: int, tokens: int) -> Any:
        """An engine batch, linked to the request spans whose candidates it scored."""
        if self.tracer is None:
            return None
        links = [Link(s.get_span_context()) for s in request_spans if s is not None]
        return self.tracer.start_span(
            "jobscore.engine_batch",
            links=links,
            attributes={"jobscore.batch.items": items, "jobscore.batch.tokens": tokens},
        )

    @staticmethod
    def end(span: Any, end_ns: int | None = None, **attributes: Any) -> None:
        if span is None:
            return
        s: Span = span
        for k, v in attributes.items():
            s.set_attribute(f"jobscore.{k}", v)
        s.end(end_time=end_ns)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
