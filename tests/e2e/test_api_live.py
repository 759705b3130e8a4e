"""Following tasks live over real HTTP: ?wait=, the SSE stream, Last-Event-ID, the log."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY
from tests.integration.api.support import Sse, sse_events

pytestmark = pytest.mark.e2e

STACK_ENV = {"TASKCORE_SSE_PING_SECONDS": "0.3"}
AUTH = {"Authorization": f"Bearer {USER_KEY}"}


def client(stack: Stack, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api.url, headers=AUTH, timeout=30, **kwargs)


async def submit(c: httpx.AsyncClient, task_type: str, **params: Any) -> dict[str, Any]:
    response = await c.post("/v1/tasks", json={"task_type": task_type, "parameters": params})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def follow(
    c: httpx.AsyncClient,
    task_id: str,
    last_event_id: str | None = None,
    stop_after: int | None = None,
) -> list[Sse]:
    """The stream's events until it closes (or ``stop_after`` events, then disconnect)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    events: list[Sse] = []
    async with c.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in sse_events(response):
            events.append(event)
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


async def logged_sequences(c: httpx.AsyncClient, task_id: str) -> list[int]:
    response = await c.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000})
    return [e["sequence"] for e in response.json()["items"]]


async def test_wait_answers_200_with_the_finished_task_when_it_ends_in_time(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as c:
        response = await c.post(
            "/v1/tasks",
            params={"wait": 20},
            json={"task_type": "diag.sleep", "parameters": {"seconds": 0.3}},
        )
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "COMPLETED"
    assert task["result"]["slept_seconds"] >= 0.3


async def test_wait_answers_202_with_the_task_as_it_stands_when_it_does_not_end(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as c:
        started = time.monotonic()
        response = await c.post(
            "/v1/tasks",
            params={"wait": 1},
            json={"task_type": "diag.sleep", "parameters": {"seconds": 30}},
        )
        waited = time.monotonic() - started
        too_long = await c.post("/v1/tasks", params={"wait": 61}, json={"task_type": "diag.noop"})
        await c.post(f"/v1/tasks/{response.json()['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] in ("QUEUED", "RUNNING")
    assert 1 <= waited < 10
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"][0]["field"] == "query.wait"


async def test_many_waits_at_once_all_get_their_finished_task(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        responses = await asyncio.gather(
            *(
                c.post("/v1/tasks", params={"wait": 30}, json={"task_type": "diag.noop"})
                for _ in range(40)
            )
        )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["status"] for r in responses} == {"COMPLETED"}


async def test_the_stream_sends_the_state_then_every_change_until_terminal(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as c:
        task = await submit(c, "diag.sleep", seconds=1.2)
        events = await follow(c, task["id"])
        logged = await logged_sequences(c, task["id"])
    first, changes = events[0], events[1:]
    assert first.event == "state"
    assert first.json()["id"] == task["id"]
    ids = [int(e.id or -1) for e in events]
    assert ids == sorted(set(ids)), "ids must increase: no repeats, in order"
    assert int(first.id or -1) == first.json()["version"]
    # every logged event after the first state arrived, once each, and nothing else
    assert [int(e.id or -1) for e in changes] == [s for s in logged if s > ids[0]]
    assert changes[-1].event == "task.completed"
    assert changes[-1].json()["status"] == "COMPLETED"
    # (the task may have started before the stream began: then the state says so)
    assert first.json()["status"] == "RUNNING" or "task.started" in [e.event for e in changes]
    progress = [e for e in changes if e.event == "task.progress"]
    assert progress
    assert progress[-1].json()["data"]["progress"]["of"] == 1.2
    # keep-alive comments while the task ran (every 0.3 s here)
    assert any(c.startswith("ping") for e in events for c in e.comments)


async def test_a_client_resuming_with_last_event_id_misses_nothing_and_sees_nothing_twice(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as c:
        task = await submit(c, "diag.sleep", seconds=1.5)
        before = await follow(c, task["id"], stop_after=3)  # then the connection drops
        resumed = await follow(c, task["id"], last_event_id=before[-1].id)
        logged = await logged_sequences(c, task["id"])
        # a client that reconnects after the end gets nothing more, and the stream ends
        after_end = await follow(c, task["id"], last_event_id=resumed[-1].id)
    ids = [int(e.id or -1) for e in before + resumed]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)
    assert ids[1:] == [s for s in logged if s > ids[0]]
    assert resumed[-1].event == "task.completed"
    assert after_end == []


async def test_a_stream_of_a_finished_task_is_its_state_and_then_it_closes(
    module_stack: Stack,
) -> None:
    async with client(module_stack) as c:
        done = await c.post("/v1/tasks", params={"wait": 20}, json={"task_type": "diag.noop"})
        events = await follow(c, done.json()["id"])
    assert [e.event for e in events] == ["state"]
    assert events[0].json()["status"] == "COMPLETED"


async def test_the_event_log_lists_every_event_in_order_page_by_page(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        done = await c.post(
            "/v1/tasks",
            params={"wait": 20},
            json={"task_type": "diag.fail", "parameters": {"times": 1}},
        )
        task_id = done.json()["id"]

        async def folded() -> list[dict[str, Any]] | None:
            items = (await c.get(f"/v1/tasks/{task_id}/events")).json()["items"]
            return items if items and items[-1]["type"] == "task.completed" else None

        everything = await wait_for_async(folded, timeout=20, message="the completed event")
        pages: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await c.get(f"/v1/tasks/{task_id}/events", params=params)).json()
            pages.extend(page["items"])
            if (cursor := page["next_cursor"]) is None:
                break
    assert done.json()["status"] == "COMPLETED"
    types = [e["type"] for e in everything]
    assert types == [
        "task.submitted",
        "task.started",
        "task.retrying",
        "task.started",
        "task.completed",
    ]
    assert pages == everything
    sequences = [e["sequence"] for e in everything]
    assert sequences == sorted(sequences)
    assert set(everything[0]) == {"event_id", "task_id", "sequence", "type", "occurred_at", "data"}
