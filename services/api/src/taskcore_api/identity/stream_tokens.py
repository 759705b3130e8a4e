"""Stream tokens: what a browser's EventSource, which cannot send headers, presents as
``GET /v1/tasks/{id}/stream?token=...``.

A token is a JWT (PyJWT, HS256) signed with ``TASKCORE_STREAM_TOKEN_SECRET`` (random per
process when unset, so replicas behind one address must share one), with audience
``taskcore:stream``, the task id, the holder's identity and a 5-minute expiry. It opens
that task's stream and nothing else: no other route accepts it, and a bearer JWT check
refuses it (its audience is not the API's).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import jwt

from taskcore_api.identity.jwt_tokens import InvalidToken, principal_from_claims
from taskcore_api.identity.principal import Principal

AUDIENCE = "taskcore:stream"
LIFETIME = timedelta(minutes=5)
# A little skew between replicas' clocks.
LEEWAY_S = 5


class StreamTokens:
    def __init__(self, secret: str | None) -> None:
        self._secret = secret or secrets.token_urlsafe(32)

    def issue(self, principal: Principal, task_id: str) -> tuple[str, datetime]:
        expires_at = datetime.now(UTC).replace(microsecond=0) + LIFETIME
        claims = {
            "aud": AUDIENCE,
            "sub": principal.user_id,
            "role": principal.role,
            "tier": principal.tier,
            "teams": sorted(principal.teams),
            "task": task_id,
            "exp": expires_at,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at

    def verify(self, token: str, task_id: str) -> Principal:
        """The holder, if the token is ours, unexpired, and for this task."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub", "task"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The stream token has expired.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The stream token is not valid.") from None
        if claims.get("task") != task_id:
            raise InvalidToken("The stream token is for another task.")
        principal = principal_from_claims(claims, via="stream_token")
        return Principal(
            user_id=principal.user_id,
            role=principal.role,
            tier=principal.tier,
            teams=principal.teams,
            via="stream_token",
            stream_task_id=task_id,
        )
