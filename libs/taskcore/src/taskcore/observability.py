"""Logging, health endpoints and the HTTP server every service runs for them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from taskcore.settings import Settings
from taskcore.tracing import current_trace_id

ReadinessCheck = Callable[[], Awaitable[None]]

_CONTEXT_FIELDS = ("task_id", "task_type", "trace_id", "user_id", "event_id")

# ---- secrets never reach a log line ------------------------------------------------------
# URL passwords (mongodb://user:PASSWORD@host, amqp://...), bearer credentials, and the
# usual key/token/secret/password assignments in headers, query strings, JSON and env
# dumps (not counts such as ``prompt_tokens=12``). Applied by a filter on every handler,
# to the whole rendered line.
_REDACTED = "***"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), r"\g<pre>***"),
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"(?i)\b(?P<pre>(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), r"\g<pre>***"),
    # api_key=..., "token": "...", password: ..., secret=..., ?token=...
    (
        re.compile(
            r"(?i)(?P<pre>\b[\w-]*(?:api[_-]?key|token|secret|password|passwd)(?!s)[\w-]*"
            r"[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)[^\s\"'&,;}]+"
        ),
        r"\g<pre>***",
    ),
)


def redact(text: str) -> str:
    """``text`` with every secret it recognisably contains replaced by ``***``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str | None) -> str:
    """A URL fit for a message: its password (if any) replaced by ``***``."""
    return redact(url or "")


class RedactingFilter(logging.Filter):
    """Rewrites each record so that its message, arguments and exception text carry no
    secret: the record is rendered once here and its ``msg`` replaced by the redacted
    text, so every formatter downstream sees only that."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: keep it, as logging itself would
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the task context a log call passes in ``extra``."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = value
        if "trace_id" not in entry and (trace_id := current_trace_id()):
            entry["trace_id"] = trace_id
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    if as_json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("aio_pika", "aiormq", "pymongo", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_health_routes(app: FastAPI, readiness: list[ReadinessCheck]) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (broker and store reachable),
    ``/metrics`` (Prometheus text format)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, Any]:
        problems = []
        for check in readiness:
            try:
                await check()
            except Exception as exc:
                problems.append(f"{getattr(check, '__name__', 'check')}: {exc}")
        if problems:
            response.status_code = 503
            return {"status": "unavailable", "problems": problems}
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)


def metrics_registry() -> CollectorRegistry:
    """The registry to expose. With PROMETHEUS_MULTIPROC_DIR set (several worker processes
    behind one port), every process's samples are merged, so counts stay right."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def health_app(service: str, readiness: list[ReadinessCheck]) -> FastAPI:
    app = FastAPI(title=f"taskcore {service}", docs_url=None, redoc_url=None)
    add_health_routes(app, readiness)
    return app


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the service's own runner, which shuts the
    server down in its own order (stop consuming, drain, then stop serving health)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    return _EmbeddedServer(config)
