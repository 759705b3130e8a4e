"""OpenTelemetry tracing: one trace per task tree, across HTTP and AMQP.

Off (and free: the API's no-op tracer) unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP
over HTTP) or ``TASKCORE_TRACE_FILE`` names a file (JSON lines, for tests and debugging).
Context crosses AMQP in the W3C ``traceparent`` header (the aio-pika instrumentation
injects and extracts it), and rides on each event as ``TaskEvent.traceparent``, because
events are batched and folded far from the code that produced them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from taskcore.settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
_enabled = False


def tracing_enabled(settings: Settings) -> bool:
    return bool(settings.otel_exporter_otlp_endpoint or os.environ.get("TASKCORE_TRACE_FILE"))


def setup_tracing(service: str, settings: Settings) -> None:
    """Install the tracer provider and the aio-pika and PyMongo instrumentations."""
    global _enabled
    if not tracing_enabled(settings) or _enabled:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"taskcore-{service}"}))
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if path := os.environ.get("TASKCORE_TRACE_FILE"):
        # Simple (synchronous) export: a test reads the file right after the work is done.
        out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        provider.add_span_processor(
            SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line))
        )
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    AioPikaInstrumentor().instrument()
    _enabled = True


def _one_line(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    parent = span.parent
    record: dict[str, Any] = {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "attributes": dict(span.attributes or {}),
    }
    return json.dumps(record, default=str) + "\n"


def instrument_app(app: Any, settings: Settings) -> None:
    """Trace a FastAPI app's requests (the start of every task tree), when tracing is on."""
    if tracing_enabled(settings):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to carry on a message or event."""
    if not _enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> otel_context.Context | None:
    if not traceparent or not _enabled:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


@contextlib.contextmanager
def within_trace(traceparent: str | None) -> Iterator[None]:
    """Run the block inside the given trace context (a no-op when there is none)."""
    ctx = context_from(traceparent)
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def start_span(name: str, parent: str | None, attributes: dict[str, Any]) -> trace.Span:
    """A span under the given W3C parent; the caller ends it. (A no-op span when off.)"""
    return trace.get_tracer("taskcore").start_span(
        name, context=context_from(parent), attributes=attributes
    )


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C traceparent naming ``span`` as the parent."""
    if not _enabled or not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None
