"""Browsers on another origin: CORS for the configured origins, and stream tokens for
EventSource (which cannot send an Authorization header), over real HTTP.

(A real EventSource in headless Chromium is tested with the browser suite.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from taskcore.settings import Settings

from tests.integration.api.support import ALICE, BOB, CAROL, RunningApi, running_api, sse_events

ORIGIN = "https://console.example.test"
SECRET = "stream-token-secret-for-these-tests-0123456789"


@pytest.fixture(scope="module")
async def api(module_settings: Settings) -> AsyncIterator[RunningApi]:
    settings = module_settings.model_copy(
        update={"cors_origins": [ORIGIN, "http://localhost:5173"], "stream_token_secret": SECRET}
    )
    async with running_api(settings) as running:
        yield running


async def submit(api: RunningApi, key: str = ALICE, **body: object) -> str:
    async with api.client(key) as c:
        response = await c.post("/v1/tasks", json={"task_type": "diag.noop", **body})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def stream_token(api: RunningApi, task_id: str, key: str = ALICE) -> dict[str, str]:
    async with api.client(key) as c:
        response = await c.post(f"/v1/tasks/{task_id}/stream-token")
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def test_a_preflight_from_a_configured_origin_is_allowed_without_a_credential(
    api: RunningApi,
) -> None:
    async with api.client() as c:
        response = await c.options(
            "/v1/tasks",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_another_origin_gets_no_cors_headers(api: RunningApi) -> None:
    async with api.client(ALICE) as c:
        preflight = await c.options(
            "/v1/tasks",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await c.get("/v1/tasks", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


async def test_answers_to_a_configured_origin_carry_cors_headers_even_a_401(
    api: RunningApi,
) -> None:
    async with api.client() as c:
        refused = await c.get("/v1/tasks", headers={"Origin": ORIGIN})
    async with api.client(ALICE) as c:
        listed = await c.get("/v1/tasks", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert listed.headers["access-control-allow-origin"] == ORIGIN


async def test_a_stream_token_opens_its_tasks_stream_without_a_header(api: RunningApi) -> None:
    task_id = await submit(api)
    issued = await stream_token(api, task_id)
    expires_in = datetime.fromisoformat(issued["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=4) < expires_in <= timedelta(minutes=5)
    async with (
        api.client() as c,
        c.stream(
            "GET",
            f"/v1/tasks/{task_id}/stream",
            params={"token": issued["token"]},
            headers={"Origin": ORIGIN},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        first = await anext(sse_events(response))
    assert first.event == "state"
    assert first.json()["id"] == task_id


async def test_a_stream_token_opens_no_other_task_and_no_other_route(api: RunningApi) -> None:
    task_id, other_id = await submit(api), await submit(api)
    token = (await stream_token(api, task_id))["token"]
    async with api.client() as c:
        other_stream = await c.get(f"/v1/tasks/{other_id}/stream", params={"token": token})
        read = await c.get(f"/v1/tasks/{task_id}", params={"token": token})
        as_bearer = await c.get(
            f"/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"}
        )
        cancel = await c.post(f"/v1/tasks/{task_id}/cancel", params={"token": token})
    assert other_stream.status_code == 401
    assert "another task" in other_stream.json()["error"]["message"]
    assert {read.status_code, as_bearer.status_code, cancel.status_code} == {401}


async def test_an_expired_or_forged_stream_token_is_a_401(api: RunningApi) -> None:
    task_id = await submit(api)
    claims = {"aud": "taskcore:stream", "sub": "alice", "task": task_id, "teams": []}
    expired = jwt.encode({**claims, "exp": int(time.time()) - 60}, SECRET, "HS256")
    forged = jwt.encode({**claims, "exp": int(time.time()) + 60}, "not-the-secret-" * 3, "HS256")
    async with api.client() as c:
        for token, message in ((expired, "expired"), (forged, "not valid")):
            response = await c.get(f"/v1/tasks/{task_id}/stream", params={"token": token})
            assert response.status_code == 401
            assert message in response.json()["error"]["message"]


async def test_only_callers_who_may_see_the_task_get_a_token(api: RunningApi) -> None:
    private_id = await submit(api)
    team_id = await submit(api, team_id="t1")
    async with api.client(BOB) as bob, api.client(CAROL) as carol:
        assert (await bob.post(f"/v1/tasks/{private_id}/stream-token")).status_code == 404
        assert (await carol.post(f"/v1/tasks/{private_id}/stream-token")).status_code == 404
        assert (await carol.post(f"/v1/tasks/{team_id}/stream-token")).status_code == 200
