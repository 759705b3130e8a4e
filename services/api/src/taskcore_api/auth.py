"""Authentication: every ``/v1`` request is authenticated before its body is read.

``AuthenticationMiddleware`` resolves the caller from ``Authorization: Bearer <API key or
JWT>`` (or, on ``GET /v1/tasks/{id}/stream`` only, a ``?token=`` stream token) and answers
401 at once when that fails, so an anonymous request costs no body parsing at all. Routes
get the caller with the ``authenticate`` dependency; what the caller may do is decided in
``taskcore_api.authz``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from taskcore_api import authz
from taskcore_api.errors import ApiError, error_response
from taskcore_api.identity.jwt_tokens import InvalidToken, JwtVerifier, looks_like_jwt
from taskcore_api.identity.keyring import KeyRing
from taskcore_api.identity.principal import Principal
from taskcore_api.identity.stream_tokens import StreamTokens

__all__ = ["AuthenticationMiddleware", "Authenticator", "Principal", "authenticate"]

_STREAM_PATH = re.compile(r"^/v1/tasks/([^/]+)/stream/?$")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Routes for administrators only.
ADMIN_PREFIXES = ("/v1/dead-letters",)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)


@dataclass
class Authenticator:
    keys: KeyRing
    jwts: JwtVerifier | None
    stream_tokens: StreamTokens

    def from_header(self, header: str) -> Principal:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("A bearer API key or token is required.")
        principal = self.keys.lookup(token)
        if principal is not None:
            return principal
        if self.jwts is not None and looks_like_jwt(token):
            try:
                return self.jwts.verify(token)
            except InvalidToken as exc:
                raise unauthorized(str(exc)) from None
        raise unauthorized("The API key is not valid.")

    def for_request(self, method: str, path: str, query: bytes, header: str | None) -> Principal:
        if header is None and method == "GET" and (match := _STREAM_PATH.match(path)):
            tokens = parse_qs(query.decode("latin-1")).get("token")
            if tokens:
                try:
                    return self.stream_tokens.verify(tokens[-1], match.group(1))
                except InvalidToken as exc:
                    raise unauthorized(str(exc)) from None
        return self.from_header(header or "")


class AuthenticationMiddleware:
    """Authenticates ``/v1`` requests before anything reads their body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        authenticator: Authenticator = scope["app"].state.deps.authenticator
        header = _header(scope, b"authorization")
        try:
            principal = authenticator.for_request(
                scope["method"], scope["path"], scope.get("query_string", b""), header
            )
            if scope["path"].startswith(ADMIN_PREFIXES):
                authz.require_admin(principal)  # a 403 before the body is read, too
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


# A coroutine on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hand-off per request for no I/O at all.
async def authenticate(request: Request) -> Principal:
    """The caller, as the middleware resolved it."""
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return principal
    header = request.headers.get("authorization")
    authenticator: Authenticator = request.app.state.deps.authenticator
    return authenticator.for_request(
        request.method, request.url.path, request.scope.get("query_string", b""), header
    )


async def require_admin(request: Request) -> Principal:
    """The caller, if an admin (403 otherwise; see ``authz.require_admin``)."""
    principal = await authenticate(request)
    authz.require_admin(principal)
    return principal
