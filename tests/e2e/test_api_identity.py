"""Identity, labels and teams through the whole system (real processes, broker, store):
a stream token follows a task to its end, labels and team travel to subtasks and
CloudEvents, tracebacks are for admins, streams close at the task's end whatever
Last-Event-ID says."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack
from taskcore.testing.subscriber import EventSubscriber

from tests.e2e.conftest import ADMIN_KEY, API_KEYS, OTHER_KEY, USER_KEY
from tests.integration.api.support import Sse, sse_events

pytestmark = pytest.mark.e2e

ORIGIN = "https://app.example.test"
TEAMMATE_KEY = "user-key-carol"
KEYS = {
    **API_KEYS,
    USER_KEY: {**API_KEYS[USER_KEY], "teams": ["studio"]},
    TEAMMATE_KEY: {"user_id": "carol", "teams": ["studio"]},
}
STACK_ENV = {
    "TASKCORE_API_KEYS": json.dumps(KEYS),
    "TASKCORE_CORS_ORIGINS": f"{ORIGIN},http://localhost:3000",
    "TASKCORE_SSE_PING_SECONDS": "0.5",
}


def client(stack: Stack, key: str | None = USER_KEY) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=stack.api.url, headers=headers, timeout=30)


async def submit(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await c.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def follow(c: httpx.AsyncClient, task_id: str, **request: Any) -> list[Sse]:
    events = []
    async with c.stream("GET", f"/v1/tasks/{task_id}/stream", **request) as response:
        assert response.status_code == 200, await response.aread()
        async for event in sse_events(response):
            events.append(event)
    return events


async def test_a_browser_follows_a_task_to_its_end_with_a_stream_token(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as user, client(module_stack, key=None) as browser:
        # long enough to be running when the stream opens (a finished task sends only its state)
        task = await submit(user, task_type="diag.sleep", parameters={"seconds": 3})
        issued = (await user.post(f"/v1/tasks/{task['id']}/stream-token")).json()
        # what EventSource sends: no Authorization header, the token in the URL
        events = await follow(
            browser,
            task["id"],
            params={"token": issued["token"]},
            headers={"Origin": ORIGIN, "Accept": "text/event-stream"},
        )
    assert events[0].event == "state"
    assert events[-1].event == "task.completed"
    assert events[-1].json()["status"] == "COMPLETED"


async def test_labels_and_team_reach_subtasks_and_every_cloudevent(module_stack: Stack) -> None:
    labels = {"project_id": "42", "scene_id": "7"}
    async with EventSubscriber(module_stack.env["RABBITMQ_URL"]) as subscriber:
        async with client(module_stack) as user, client(module_stack, TEAMMATE_KEY) as mate:
            parent = await submit(
                user,
                task_type="diag.fanout",
                parameters={"count": 3},
                labels=labels,
                team_id="studio",
            )

            async def children() -> list[dict[str, Any]]:
                response = await mate.get(
                    "/v1/tasks", params={"parent_task_id": parent["id"], "status": "COMPLETED"}
                )
                items: list[dict[str, Any]] = response.json()["items"]
                return items if len(items) == 3 else []

            kids = await wait_for_async(children, timeout=30, message="three completed children")
            by_label = await mate.get(
                "/v1/tasks", params={"label": ["project_id:42", "scene_id:7"], "limit": 100}
            )

        async def completed_events() -> bool:
            return {k["id"] for k in kids} <= {
                str(e.get_subject())
                for e in subscriber.events
                if str(e.get_type()).endswith(".completed")
            }

        await wait_for_async(completed_events, timeout=30, message="the children's events")
    assert {(k["labels"]["project_id"], k["team_id"], k["user_id"]) for k in kids} == {
        ("42", "studio", "alice")
    }
    listed = {t["id"] for t in by_label.json()["items"]}
    assert {parent["id"], *(k["id"] for k in kids)} <= listed
    ours = [e for e in subscriber.events if e.get_subject() in listed]
    assert ours
    for event in ours:
        data = event.get_data()
        assert data["labels"] == labels, event.get_type()
        assert data["team_id"] == "studio"
    assert not subscriber.errors


async def test_a_user_sees_an_errors_type_and_message_and_an_admin_its_traceback(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as user, client(module_stack, ADMIN_KEY) as admin:
        failing = {"task_type": "diag.fail", "parameters": {"times": 5, "retryable": False}}
        response = await user.post("/v1/tasks", params={"wait": 30}, json=failing)
        task = response.json()
        assert task["status"] in ("FAILED", "DEAD_LETTER"), task
        assert task["error"]["type"]
        assert task["error"]["message"]
        assert task["error"]["traceback"] is None
        as_admin = (await admin.get(f"/v1/tasks/{task['id']}")).json()
        assert "Traceback" in as_admin["error"]["traceback"]
        user_log = (await user.get(f"/v1/tasks/{task['id']}/events")).json()["items"]
        admin_log = (await admin.get(f"/v1/tasks/{task['id']}/events")).json()["items"]
        user_stream = await follow(user, task["id"], headers={"Last-Event-ID": "0"})
        user_state = await follow(user, task["id"])
    errors = [e["data"]["error"] for e in user_log if "error" in e["data"]]
    assert errors
    assert all(e["traceback"] is None and e["message"] for e in errors)
    assert any(e["data"].get("error", {}).get("traceback") for e in admin_log)
    streamed = [e.json()["data"]["error"] for e in user_stream if "error" in e.json()["data"]]
    assert streamed
    assert all(e["traceback"] is None for e in streamed)
    assert user_state[0].json()["error"]["traceback"] is None


async def test_a_stream_resumed_past_the_final_event_closes_when_the_task_ends(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as user:
        task = await submit(user, task_type="diag.sleep", parameters={"seconds": 1})
        # a client that claims to have seen far more than the task will ever send
        events = await follow(user, task["id"], headers={"Last-Event-ID": str(10**12)})
        finished = (await user.get(f"/v1/tasks/{task['id']}")).json()
    assert events == []
    assert finished["status"] == "COMPLETED"


async def test_another_user_cannot_follow_or_list_a_team_task(module_stack: Stack) -> None:
    async with client(module_stack) as user, client(module_stack, OTHER_KEY) as other:
        task = await submit(user, task_type="diag.noop", team_id="studio")
        assert (await other.get(f"/v1/tasks/{task['id']}/stream")).status_code == 404
        assert (await other.post(f"/v1/tasks/{task['id']}/stream-token")).status_code == 404
        listed = await other.get("/v1/tasks", params={"team_id": "studio"})
    assert listed.status_code == 403
