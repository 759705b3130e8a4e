"""Request body size limits, enforced before the body is parsed.

A request whose ``Content-Length`` is over the route's limit is refused at once; a
streamed (chunked) body is counted as it arrives and refused as soon as it passes the
limit. Either way the answer is a 413 in the API's error shape. (Starlette's own
``RequestBodyLimitMiddleware`` answers a declared oversize body in plain text.)
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskcore_api.errors import error_response

MIB = 1024 * 1024
# Documented in the OpenAPI description: 1 MiB per request, 16 MiB for a batch.
DEFAULT_LIMIT = 1 * MIB
BATCH_LIMIT = 16 * MIB


def limit_for(path: str) -> int:
    return BATCH_LIMIT if path.rstrip("/").endswith("/tasks/batch") else DEFAULT_LIMIT


def _message(limit: int) -> str:
    return f"The body is larger than this route accepts ({limit} bytes)."


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so the route's error handling turns it
    into the 413 error body rather than a body-parsing 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))
        self.limit = limit


async def body_too_large(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler for ``BodyTooLarge``, for the error body's details."""
    limit = exc.limit if isinstance(exc, BodyTooLarge) else DEFAULT_LIMIT
    return _refusal(limit)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(limit, scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse(limit, scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _refusal(limit: int) -> JSONResponse:
    return error_response(413, "payload_too_large", _message(limit), {"limit_bytes": limit})


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    await _refusal(limit)(scope, receive, send)
