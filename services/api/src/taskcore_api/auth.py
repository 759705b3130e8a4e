"""Bearer API keys from TASKCORE_API_KEYS. Keys are compared in constant time and never
logged; a missing or unknown key is a 401."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import Request
from taskcore.settings import ApiKey

from taskcore_api.errors import ApiError


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    tier: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class KeyRing:
    """The configured keys, held as SHA-256 digests: every lookup compares the candidate's
    digest with every key's, in constant time, so neither which key matched nor how long
    the keys are shows in the time taken."""

    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = [(_digest(k), v) for k, v in keys.items()]

    def lookup(self, presented: str) -> Principal | None:
        candidate = _digest(presented)
        found: ApiKey | None = None
        for digest, value in self._keys:
            if hmac.compare_digest(digest, candidate):
                found = value
        if found is None:
            return None
        return Principal(user_id=found.user_id, role=found.role, tier=found.tier)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# The dependencies below are coroutines on purpose: FastAPI runs a plain ``def``
# dependency in its thread pool, a thread hand-off per request for no I/O at all.


async def authenticate(request: Request) -> Principal:
    """The key holder, or a 401."""
    return principal_of(request)


async def require_admin(request: Request) -> Principal:
    """The key holder if an admin; a 401 without a valid key, a 403 for a user."""
    principal = principal_of(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "This route is for administrators.")
    return principal


def principal_of(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401,
            "unauthorized",
            "A bearer API key is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal: Principal | None = request.app.state.deps.keys.lookup(token.strip())
    if principal is None:
        raise ApiError(
            401, "unauthorized", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal
