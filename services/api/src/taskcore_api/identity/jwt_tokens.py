"""Bearer JWTs, verified with PyJWT.

HS256 with ``TASKCORE_JWT_SECRET``, RS256 or ES256 with ``TASKCORE_JWT_PUBLIC_KEY`` (a
PEM; the key's type picks the algorithm), optional issuer and audience, ``exp`` and
``sub`` required, ``nbf`` honoured, all with ``TASKCORE_JWT_LEEWAY_SECONDS`` of clock
skew. Claims: ``sub`` (the user id), ``role`` (``user`` or ``admin``), ``tier`` (``free``
or ``paid``), ``teams`` (a list of team ids).
"""

from __future__ import annotations

from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from taskcore.settings import MAX_TEAMS, Settings

from taskcore_api.identity.principal import Principal

_ROLES = ("user", "admin")
_TIERS = ("free", "paid")


class InvalidToken(Exception):
    """Why a token is refused, in words safe to show its bearer."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class JwtVerifier:
    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key_pem: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_s: float = 30.0,
    ) -> None:
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key_pem:
            key = _load_public_key(public_key_pem)
            self._keys["RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"] = key
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        if not (settings.jwt_secret or settings.jwt_public_key):
            return None
        return cls(
            secret=settings.jwt_secret,
            public_key_pem=settings.jwt_public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(str(algorithm))
            if key is None:
                raise InvalidToken("The token's algorithm is not accepted.")
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("The token is not valid yet.") from None
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
            raise InvalidToken("The token is addressed to another service.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The token is not valid.") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any], *, via: str = "jwt") -> Principal:
    sub, role, tier = claims.get("sub"), claims.get("role", "user"), claims.get("tier", "paid")
    teams = claims.get("teams", [])
    if not isinstance(sub, str) or not sub or len(sub) > 200:
        raise InvalidToken("The token's subject is not a user id.")
    if role not in _ROLES or tier not in _TIERS:
        raise InvalidToken("The token's role or tier is not one taskcore knows.")
    if not isinstance(teams, list) or len(teams) > MAX_TEAMS:
        raise InvalidToken("The token's teams claim is not a list of team ids.")
    if not all(isinstance(t, str) and 0 < len(t) <= 200 for t in teams):
        raise InvalidToken("The token's teams claim is not a list of team ids.")
    return Principal(
        user_id=sub,
        role=role,
        tier=tier,
        teams=frozenset(teams),
        via="stream_token" if via == "stream_token" else "jwt",
    )


def _load_public_key(pem: str) -> Any:
    # Environment variables often carry a PEM with its newlines escaped.
    text = pem.replace("\\n", "\n").strip()
    try:
        key = load_pem_public_key(text.encode())
    except ValueError:
        raise ValueError(
            "TASKCORE_JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----)."
        ) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("TASKCORE_JWT_PUBLIC_KEY must be an RSA or an EC (P-256) public key.")
    return key
