"""Credentials over real HTTP: JWTs (HS256, RS256, ES256; expiry, not-before, skew,
issuer, audience, signature), hashed keys, and a keys file rotated without a restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from taskcore.settings import ApiKey, Settings
from taskcore.testing import wait_for_async

from tests.integration.api.support import JWT_SECRET, RunningApi, StartApi, auth, running_api

ISSUER, AUDIENCE = "https://id.example.test", "taskcore-api"


@dataclass(frozen=True)
class FromNow:
    """A time claim relative to when the token is made (not when tests are collected)."""

    seconds: int


def token(key: Any = JWT_SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    claims = {k: now + v.seconds if isinstance(v, FromNow) else v for k, v in claims.items()}
    payload = {"sub": "jane", "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm)


async def whoami(api: RunningApi, bearer: str) -> tuple[int, dict[str, Any]]:
    """Submit a task with the credential: its status, and the task (or error) answered."""
    async with api.client(bearer) as c:
        response = await c.post("/v1/tasks", json={"task_type": "diag.noop"})
    body: dict[str, Any] = response.json()
    return response.status_code, body


@pytest.fixture(scope="module")
async def hs256_api(module_settings: Settings) -> AsyncIterator[RunningApi]:
    settings = module_settings.model_copy(
        update={
            "jwt_secret": JWT_SECRET,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_leeway_seconds": 10,
        }
    )
    async with running_api(settings) as api:
        yield api


async def test_a_valid_jwt_authenticates_its_subject_with_its_tier(hs256_api: RunningApi) -> None:
    status, task = await whoami(hs256_api, token(tier="free", teams=["t9"]))
    assert status == 202
    assert (task["user_id"], task["tier"]) == ("jane", "free")


@pytest.mark.parametrize(
    ("why", "claims", "message"),
    [
        ("expired", {"exp": FromNow(-60)}, "expired"),
        ("not yet valid", {"nbf": FromNow(60)}, "not valid yet"),
        ("wrong issuer", {"iss": "https://evil.example"}, "addressed to another"),
        ("wrong audience", {"aud": "another-api"}, "addressed to another"),
        ("no expiry", {"exp": None}, "not valid"),
        ("unknown role", {"role": "root"}, "role or tier"),
        ("teams not a list", {"teams": "t1"}, "teams"),
    ],
)
async def test_a_jwt_that_is_not_valid_is_a_401_saying_why(
    hs256_api: RunningApi, why: str, claims: dict[str, Any], message: str
) -> None:
    status, body = await whoami(hs256_api, token(**claims))
    assert status == 401, why
    assert body["error"]["code"] == "unauthorized"
    assert message in body["error"]["message"]


async def test_a_wrongly_signed_jwt_is_a_401(hs256_api: RunningApi) -> None:
    status, _ = await whoami(hs256_api, token(key="another-secret-of-enough-length-xx"))
    assert status == 401
    unsigned = jwt.encode({"sub": "jane", "exp": int(time.time()) + 60}, None, "none")
    assert (await whoami(hs256_api, unsigned))[0] == 401


async def test_clock_skew_within_the_leeway_is_accepted(hs256_api: RunningApi) -> None:
    now = int(time.time())
    assert (await whoami(hs256_api, token(exp=now - 5)))[0] == 202
    assert (await whoami(hs256_api, token(nbf=now + 5)))[0] == 202


async def test_an_admin_claim_reaches_admin_routes(hs256_api: RunningApi) -> None:
    async with hs256_api.client(token(role="admin")) as admin, hs256_api.client(token()) as user:
        assert (await admin.get("/v1/dead-letters")).status_code == 200
        assert (await user.get("/v1/dead-letters")).status_code == 403


def hs256_signed_with(secret: str) -> str:
    """An HS256 token whose secret is the public key (PyJWT refuses to make one)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "jane", "exp": int(time.time()) + 60}).encode())
    mac = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(mac)}"


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_rs256_and_es256_tokens_verify_against_the_public_key(
    start_api: StartApi, algorithm: str
) -> None:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private, other = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
    # escaped newlines, as a PEM often arrives in an environment variable
    api = await start_api(jwt_public_key=pem(private).replace("\n", "\\n"))
    unaddressed = {"iss": None, "aud": None}  # this API expects neither
    assert (await whoami(api, token(private, algorithm, **unaddressed)))[0] == 202
    assert (await whoami(api, token(other, algorithm, **unaddressed)))[0] == 401
    # a token with an audience this API does not expect is refused
    assert (await whoami(api, token(private, algorithm)))[0] == 401
    # an HS256 token is not accepted: no secret is configured (no algorithm confusion)
    assert (await whoami(api, hs256_signed_with(pem(private))))[0] == 401


async def test_without_jwt_settings_a_jwt_is_just_an_unknown_key(start_api: StartApi) -> None:
    api = await start_api()
    status, body = await whoami(api, token())
    assert status == 401
    assert body["error"]["message"] == "The API key is not valid."


# ---- the keys file ------------------------------------------------------------------------


def write_keys(path: Path, keys: dict[str, dict[str, Any]]) -> None:
    """Replace the file at once (a rename), as a deployment tool would."""
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps(keys))
    os.replace(staged, path)


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def status_with(api: RunningApi, key: str) -> int:
    async with api.client(key) as c:
        return (await c.get("/v1/task-types")).status_code


async def test_a_hashed_key_in_the_file_authenticates_its_holder(
    start_api: StartApi, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {sha256("plain-secret"): {"user_id": "hashed", "teams": ["t1"]}})
    api = await start_api(api_keys_file=str(path))
    async with api.client("plain-secret") as c:
        response = await c.post("/v1/tasks", json={"task_type": "diag.noop", "team_id": "t1"})
    assert response.status_code == 202
    assert response.json()["user_id"] == "hashed"
    assert await status_with(api, sha256("plain-secret")) == 401  # the digest is no key


async def test_a_rotated_key_works_within_five_seconds_and_the_old_one_stops(
    start_api: StartApi, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {"old-key": {"user_id": "svc"}})
    api = await start_api(api_keys_file=str(path), api_keys={"env-key": ApiKey(user_id="env")})
    assert await status_with(api, "old-key") == 200
    write_keys(path, {sha256("new-key"): {"user_id": "svc"}})
    began = time.monotonic()

    async def rotated() -> bool:
        return await status_with(api, "new-key") == 200

    await wait_for_async(rotated, timeout=5, message="the new key to work")
    assert time.monotonic() - began < 5
    assert await status_with(api, "old-key") == 401
    assert await status_with(api, "env-key") == 200  # TASKCORE_API_KEYS keys stay


async def test_a_broken_keys_file_keeps_the_last_good_keys_and_says_so_once(
    start_api: StartApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {"good-key": {"user_id": "svc"}})
    api = await start_api(api_keys_file=str(path), api_keys_poll_seconds=0.1)
    caplog.set_level(logging.INFO, logger="taskcore_api.identity.keyring")
    staged = path.with_suffix(".tmp")
    staged.write_text('{"good-key": {"user_id": ')  # truncated
    os.replace(staged, path)

    def complaints() -> list[str]:
        return [r.getMessage() for r in caplog.records if "was not loaded" in r.getMessage()]

    async def complained() -> bool:
        return bool(complaints())

    await wait_for_async(complained, timeout=5, message="the reload to fail")
    assert await status_with(api, "good-key") == 200
    write_keys(path, {"good-key": {"user_id": "svc", "role": "superuser"}})  # invalid role

    async def complained_again() -> bool:
        return len(complaints()) >= 2

    await wait_for_async(complained_again, timeout=5, message="a second complaint")
    assert await status_with(api, "good-key") == 200
    assert "good-key" not in caplog.text  # a key never reaches the log
    assert complaints()[0].startswith(f"The API keys file {path} was not loaded (")
    assert "role" in complaints()[1]
    assert len(complaints()) == 2  # one sentence per broken version, not one per poll


async def test_sighup_reloads_the_keys_file_at_once(start_api: StartApi, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {"first": {"user_id": "svc"}})
    api = await start_api(api_keys_file=str(path), api_keys_poll_seconds=3600)
    path.write_text(json.dumps({"second": {"user_id": "svc"}}))
    os.kill(os.getpid(), signal.SIGHUP)  # the API runs in this process here

    async def reloaded() -> bool:
        return await status_with(api, "second") == 200

    await wait_for_async(reloaded, timeout=3, message="SIGHUP to reload the keys")
    assert await status_with(api, "first") == 401


async def test_bearer_credentials_and_stream_tokens_never_reach_the_logs(
    hs256_api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_token = token(exp=int(time.time()) - 100)
    async with hs256_api.client() as c:
        await c.get("/v1/tasks", headers=auth(secret_token))
    assert secret_token not in caplog.text
