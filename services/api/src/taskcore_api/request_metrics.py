"""Request latency by route template, method and status (bounded labels: templates, not
paths with ids). A pure ASGI middleware, so streamed responses are timed to their end."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from taskcore import metrics

_UNTIMED = frozenset({"/metrics", "/healthz", "/readyz"})


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNTIMED:
            await self.app(scope, receive, send)
            return
        status = 500
        began = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - began
            )
