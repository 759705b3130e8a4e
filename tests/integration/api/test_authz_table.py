"""Every authorization decision, as a table: each route x each kind of caller x each kind of
credential (API key, JWT), against a real API over HTTP.

The task under test is alice's, shared with team t1. Callers: anonymous, a wrong user (no
team), a teammate (t1), a member of another team (t2), the owner, and an admin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from taskcore.settings import Settings

from tests.integration.api.support import (
    ALICE,
    API_KEYS,
    BOB,
    CAROL,
    DAVE,
    JWT_SECRET,
    ROOT,
    RunningApi,
    jwt_for,
    running_api,
    sse_events,
)

CALLERS = {
    "anonymous": None,
    "wrong user": BOB,
    "teammate": CAROL,
    "other team": DAVE,
    "owner": ALICE,
    "admin": ROOT,
}
OK, HIDDEN = "ok", "hidden"
# What each caller gets on each route (of a team task unless the route says private).
ALLOWED = {"teammate", "owner", "admin"}
TABLE: dict[str, dict[str, str]] = {
    "GET task": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "GET private task": {c: OK if c in {"owner", "admin"} else "404" for c in CALLERS},
    "GET events": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "GET stream": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "POST cancel": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "POST stream-token": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "GET list": {c: OK if c in ALLOWED else HIDDEN for c in CALLERS},
    "GET list ?team_id=t1": {c: OK if c in ALLOWED else "403" for c in CALLERS},
    "POST submit to t1": {c: OK if c in ALLOWED else "403" for c in CALLERS},
    "POST batch to t1": {c: OK if c in ALLOWED else "403" for c in CALLERS},
    "GET task-types": {c: OK for c in CALLERS},
    "GET dead-letters": {c: OK if c == "admin" else "403" for c in CALLERS},
    "GET usage": {c: OK for c in CALLERS},
    "GET quota": {c: OK for c in CALLERS},
    "GET providers": {c: OK if c == "admin" else "403" for c in CALLERS},
    "GET schedule": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "GET schedule list": {c: OK if c in ALLOWED else HIDDEN for c in CALLERS},
    "POST schedule pause": {c: OK if c in ALLOWED else "404" for c in CALLERS},
    "POST schedule for t1": {c: OK if c in ALLOWED else "403" for c in CALLERS},
}
SCHEDULE = {"name": "s", "cron": "0 0 * * *", "task": {"task_type": "diag.noop", "team_id": "t1"}}
for row in TABLE.values():
    row["anonymous"] = "401"


@pytest.fixture(scope="module")
async def api(module_settings: Settings) -> AsyncIterator[RunningApi]:
    async with running_api(module_settings.model_copy(update={"jwt_secret": JWT_SECRET})) as a:
        yield a


def headers_for(caller: str, via: str) -> dict[str, str]:
    key = CALLERS[caller]
    if key is None:  # no credential, or a token nobody signed
        return {} if via == "api key" else {"Authorization": "Bearer eyJhbGciOi.bad.token"}
    token = key if via == "api key" else jwt_for(API_KEYS[key])
    return {"Authorization": f"Bearer {token}"}


async def new_task(api: RunningApi, team_id: str | None = "t1") -> str:
    async with api.client(ALICE) as alice:
        body: dict[str, Any] = {"task_type": "diag.noop"}
        if team_id:
            body["team_id"] = team_id
        response = await alice.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def outcome(response: httpx.Response) -> str:
    return OK if response.status_code in (200, 201, 202) else str(response.status_code)


async def new_schedule(api: RunningApi) -> str:
    async with api.client(ALICE) as alice:
        response = await alice.post("/v1/schedules", json=SCHEDULE)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def attempt_schedule(api: RunningApi, route: str, headers: dict[str, str]) -> str:
    schedule_id = await new_schedule(api)
    async with api.client(headers=headers) as c:
        if route == "GET schedule":
            return outcome(await c.get(f"/v1/schedules/{schedule_id}"))
        if route == "POST schedule pause":
            return outcome(await c.post(f"/v1/schedules/{schedule_id}/pause"))
        if route == "POST schedule for t1":
            return outcome(await c.post("/v1/schedules", json=SCHEDULE))
        response = await c.get("/v1/schedules", params={"limit": 500})
        if response.status_code != 200:
            return outcome(response)
        return OK if schedule_id in {s["id"] for s in response.json()["items"]} else HIDDEN


async def attempt(api: RunningApi, route: str, headers: dict[str, str]) -> str:
    if "schedule" in route:
        return await attempt_schedule(api, route, headers)
    task_id = await new_task(api, team_id=None if route == "GET private task" else "t1")
    async with api.client(headers=headers) as c:
        if route in ("GET task", "GET private task"):
            return outcome(await c.get(f"/v1/tasks/{task_id}"))
        if route == "GET events":
            return outcome(await c.get(f"/v1/tasks/{task_id}/events"))
        if route == "GET stream":
            async with c.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
                if response.status_code != 200:
                    await response.aread()
                    return outcome(response)
                first = await anext(sse_events(response))
                assert first.json()["id"] == task_id
                return OK
        if route == "POST cancel":
            return outcome(await c.post(f"/v1/tasks/{task_id}/cancel"))
        if route == "POST stream-token":
            return outcome(await c.post(f"/v1/tasks/{task_id}/stream-token"))
        if route == "GET list":
            response = await c.get("/v1/tasks", params={"limit": 500})
            if response.status_code != 200:
                return outcome(response)
            ids = {t["id"] for t in response.json()["items"]}
            return OK if task_id in ids else HIDDEN
        if route == "GET list ?team_id=t1":
            response = await c.get("/v1/tasks", params={"team_id": "t1", "limit": 500})
            if response.status_code == 200:
                assert task_id in {t["id"] for t in response.json()["items"]}
            return outcome(response)
        if route == "POST submit to t1":
            body = {"task_type": "diag.noop", "team_id": "t1"}
            return outcome(await c.post("/v1/tasks", json=body))
        if route == "POST batch to t1":
            body = {"tasks": [{"task_type": "diag.noop", "team_id": "t1"}]}
            response = await c.post("/v1/tasks/batch", json=body)
            if response.status_code != 200:
                return outcome(response)
            [result] = response.json()["results"]
            return OK if result["ok"] else {"not_a_team_member": "403"}[result["error"]["code"]]
        if route == "GET task-types":
            return outcome(await c.get("/v1/task-types"))
        if route == "GET dead-letters":
            return outcome(await c.get("/v1/dead-letters"))
        if route in ("GET usage", "GET quota", "GET providers"):
            return outcome(await c.get(f"/v1/{route.split()[1]}"))
    raise AssertionError(f"no such route in the table: {route}")


@pytest.mark.parametrize("via", ["api key", "jwt"])
@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("route", list(TABLE))
async def test_every_route_answers_every_caller_as_the_table_says(
    api: RunningApi, route: str, caller: str, via: str
) -> None:
    assert await attempt(api, route, headers_for(caller, via)) == TABLE[route][caller]


async def test_a_teammate_cancels_a_team_task_and_the_owner_sees_it(api: RunningApi) -> None:
    task_id = await new_task(api)
    async with api.client(CAROL) as carol, api.client(ALICE) as alice:
        cancelled = await carol.post(f"/v1/tasks/{task_id}/cancel")
        seen = await alice.get(f"/v1/tasks/{task_id}")
    assert cancelled.status_code == 202
    assert seen.json()["cancel_requested"] is True
    assert seen.json()["team_id"] == "t1"
