"""Authentication and tenancy: every route, for the anonymous, the wrong user and the
right user (and the admin, who sees everyone's)."""

from __future__ import annotations

import logging

import pytest

from tests.integration.api.support import ALICE, BOB, ROOT, RunningApi, auth, sse_events, submit

# (method, path template) of every /v1 task route that names a task.
TASK_ROUTES = [
    ("GET", "/v1/tasks/{id}"),
    ("GET", "/v1/tasks/{id}/events"),
    ("POST", "/v1/tasks/{id}/cancel"),
    ("GET", "/v1/tasks/{id}/stream"),
]
ALL_ROUTES = [
    ("POST", "/v1/tasks"),
    ("POST", "/v1/tasks/batch"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/task-types"),
    *TASK_ROUTES,
]
BODIES = {
    "/v1/tasks": {"task_type": "diag.noop"},
    "/v1/tasks/batch": {"tasks": [{"task_type": "diag.noop"}]},
}


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, auth("not-a-key"), {"Authorization": f"Basic {ALICE}"}, {"Authorization": "Bearer"}],
    ids=["no-header", "unknown-key", "wrong-scheme", "empty-token"],
)
async def test_anonymous_requests_are_401_on_every_route(
    api: RunningApi, method: str, path: str, headers: dict[str, str]
) -> None:
    async with api.client() as client:
        response = await client.request(
            method, path.format(id="0" * 32), headers=headers, json=BODIES.get(path)
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), TASK_ROUTES)
async def test_another_users_task_is_a_404_and_untouched(
    api: RunningApi, method: str, path: str
) -> None:
    async with api.client(ALICE) as alice, api.client(BOB) as bob:
        task = await submit(alice)
        response = await bob.request(method, path.format(id=task["id"]))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        # the same answer as for an id that does not exist at all
        missing = await bob.request(method, path.format(id="f" * 32))
        assert missing.json() == response.json()
        after = (await alice.get(f"/v1/tasks/{task['id']}")).json()
        assert after["cancel_requested"] is False


@pytest.mark.parametrize(("method", "path"), TASK_ROUTES)
@pytest.mark.parametrize("key", [ALICE, ROOT], ids=["owner", "admin"])
async def test_the_owner_and_an_admin_may_use_every_task_route(
    api: RunningApi, method: str, path: str, key: str
) -> None:
    async with api.client(ALICE) as alice, api.client(key) as client:
        task = await submit(alice)
        url = path.format(id=task["id"])
        if path.endswith("/stream"):
            async with client.stream(method, url) as response:
                assert response.status_code == 200
                first = await anext(sse_events(response))
            assert first.event == "state"
            assert first.json()["id"] == task["id"]
            return
        response = await client.request(method, url)
    assert response.status_code in (200, 202), response.text
    body = response.json()
    assert body.get("id", task["id"]) == task["id"]


async def test_submissions_belong_to_the_key_holder_and_lists_show_only_their_own(
    api: RunningApi,
) -> None:
    async with api.client(ALICE) as alice, api.client(BOB) as bob, api.client(ROOT) as root:
        mine = await submit(alice)
        batch = await alice.post("/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}]})
        theirs = await submit(bob)
        assert mine["user_id"] == "alice"
        assert theirs["user_id"] == "bob"
        assert batch.json()["results"][0]["task"]["user_id"] == "alice"
        alice_ids = {t["id"] for t in (await alice.get("/v1/tasks")).json()["items"]}
        bob_ids = {t["id"] for t in (await bob.get("/v1/tasks")).json()["items"]}
        all_ids = {t["id"] for t in (await root.get("/v1/tasks")).json()["items"]}
        # a user cannot widen the list with the admin-only filter
        widened = await bob.get("/v1/tasks", params={"user_id": "alice"})
    assert mine["id"] in alice_ids
    assert mine["id"] not in bob_ids
    assert theirs["id"] in bob_ids
    assert theirs["id"] not in alice_ids
    assert {mine["id"], theirs["id"]} <= all_ids
    assert {t["id"] for t in widened.json()["items"]} == bob_ids


async def test_task_types_are_listed_for_any_user_with_parameter_schemas(
    api: RunningApi,
) -> None:
    async with api.client(BOB) as bob:
        response = await bob.get("/v1/task-types")
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()["items"]}
    assert {"diag.noop", "diag.sleep", "diag.fail", "diag.fanout"} <= set(types)
    seconds = types["diag.sleep"]["parameters_schema"]["properties"]["seconds"]
    assert seconds["minimum"] == 0
    assert seconds["maximum"] == 3600


async def test_api_keys_never_reach_the_logs(
    api: RunningApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with api.client() as client:
        await client.get("/v1/tasks", headers=auth("leaked-candidate-key"))
        await client.get("/v1/tasks", headers=auth(ALICE))
        await client.post("/v1/tasks", headers=auth(ALICE), json={"task_type": "nope"})
    assert caplog.records, "the API logged nothing at all, so this proves nothing"
    assert "leaked-candidate-key" not in caplog.text
    assert ALICE not in caplog.text
