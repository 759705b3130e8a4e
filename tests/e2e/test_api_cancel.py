"""Cancellation over real HTTP, against the real executor (docs/design.md, "Cancellation")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

# One slot per tier, so a second paid task waits queued behind a running one.
STACK_ENV = {"TASKCORE_CONCURRENCY": "1", "TASKCORE_PREFETCH": "4"}
AUTH = {"Authorization": f"Bearer {USER_KEY}"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS"}


def client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api.url, headers=AUTH, timeout=30)


async def submit(c: httpx.AsyncClient, task_type: str, **params: Any) -> dict[str, Any]:
    response = await c.post("/v1/tasks", json={"task_type": task_type, "parameters": params})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def until(
    c: httpx.AsyncClient, task_id: str, *statuses: str, within_s: float = 20
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = (await c.get(f"/v1/tasks/{task_id}")).json()
        return task if task["status"] in statuses else None

    return await wait_for_async(probe, timeout=within_s, message=f"{task_id} {statuses}")


async def event_types(c: httpx.AsyncClient, task_id: str) -> list[str]:
    items = (await c.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000})).json()["items"]
    return [e["type"] for e in items]


async def test_a_queued_task_that_is_cancelled_never_runs(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        blocker = await submit(c, "diag.sleep", seconds=60)
        await until(c, blocker["id"], "RUNNING")
        victim = await submit(c, "diag.noop")
        response = await c.post(f"/v1/tasks/{victim['id']}/cancel")
        assert response.status_code == 202, response.text
        cancelled = await until(c, victim["id"], "CANCELLED")
        # free the slot; a task queued after the victim completing shows the executor has
        # since taken the victim's message from the queue, and dropped it
        await c.post(f"/v1/tasks/{blocker['id']}/cancel")
        marker = await submit(c, "diag.noop")
        await until(c, marker["id"], "COMPLETED")
        victim_now = (await c.get(f"/v1/tasks/{victim['id']}")).json()
        types = await event_types(c, victim["id"])
    assert cancelled["attempts"] == 0
    assert victim_now["status"] == "CANCELLED"
    assert victim_now["attempts"] == 0
    assert victim_now["started_at"] is None
    assert types == ["task.submitted", "task.cancelled"]


async def test_a_running_task_is_signalled_and_stops_cooperatively(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        task = await submit(c, "diag.sleep", seconds=60)
        await until(c, task["id"], "RUNNING")
        response = await c.post(f"/v1/tasks/{task['id']}/cancel")
        assert response.status_code == 202
        done = await until(c, task["id"], "CANCELLED", within_s=15)
        types = await event_types(c, task["id"])
    took = datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["started_at"])
    assert took.total_seconds() < 30  # it stopped, long before its 60 s were up
    assert done["attempts"] == 1
    # (by sequence the API's cancel_requested may sort after the executor's cancelled:
    # the executor reserved its block of sequences when it claimed the task)
    assert "task.cancel_requested" in types
    assert "task.cancelled" in types
    assert "task.completed" not in types


async def test_cancelling_a_parent_cancels_its_open_subtasks(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        parent = await submit(
            c, "diag.fanout", count=3, child_type="diag.sleep", child_parameters={"seconds": 60}
        )

        async def children() -> list[dict[str, Any]] | None:
            page = await c.get("/v1/tasks", params={"parent_task_id": parent["id"]})
            items: list[dict[str, Any]] = page.json()["items"]
            return (
                items if len(items) == 3 and any(t["status"] == "RUNNING" for t in items) else None
            )

        await wait_for_async(children, timeout=20, message="three children, one running")
        response = await c.post(f"/v1/tasks/{parent['id']}/cancel")
        assert response.status_code == 202
        for child in await children_of(c, parent["id"]):
            await until(c, child["id"], *TERMINAL)
        settled = await children_of(c, parent["id"])
        final = await until(c, parent["id"], *TERMINAL)
    assert {t["status"] for t in settled} == {"CANCELLED"}
    assert final["cancel_requested"] is True
    assert final["status"] == "CANCELLED"


async def children_of(c: httpx.AsyncClient, parent_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await c.get("/v1/tasks", params={"parent_task_id": parent_id})
    ).json()["items"]
    return items


async def test_cancelling_a_finished_task_is_a_409(module_stack: Stack) -> None:
    async with client(module_stack) as c:
        done = await c.post("/v1/tasks", params={"wait": 20}, json={"task_type": "diag.noop"})
        assert done.json()["status"] == "COMPLETED"
        response = await c.post(f"/v1/tasks/{done.json()['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_finished"
