"""A task that kills its executor on every attempt is dead-lettered as ``stalled`` after
``TASKCORE_MAX_STALLS`` take-overs, and other work keeps flowing meanwhile (real
processes; the test restarts each executor that dies, as a supervisor would)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import ADMIN_KEY, USER_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

STACK_ENV = {"TASKCORE_PLUGINS": "tests.e2e.time_plugin", "TASKCORE_MAX_STALLS": "3"}
STACK_EXECUTORS = 2
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS"}


def restart_the_dead(stack: Stack) -> int:
    """Start again every executor whose process died; how many were."""
    dead = [p for p in stack.processes["executor"] if p.process and p.process.poll() is not None]
    for executor in dead:
        executor.start(wait_ready=False)
    return len(dead)


async def test_a_task_that_kills_its_executor_is_dead_lettered_as_stalled(
    module_stack: Stack,
) -> None:
    headers = {"Authorization": f"Bearer {USER_KEY}"}
    async with httpx.AsyncClient(base_url=module_stack.api.url, headers=headers, timeout=30) as c:
        crash = (await c.post("/v1/tasks", json={"task_type": "test.crash"})).json()
        others: list[str] = []
        deaths = 0

        async def crash_settled() -> dict[str, Any] | None:
            nonlocal deaths
            deaths += await asyncio.to_thread(restart_the_dead, module_stack)
            # Other work goes on being submitted, and done, all along.
            response = await c.post("/v1/tasks", json={"task_type": "diag.noop"})
            others.append(response.json()["id"])
            task: dict[str, Any] = (await c.get(f"/v1/tasks/{crash['id']}")).json()
            return task if task["status"] in TERMINAL else None

        dead = await wait_for_async(crash_settled, timeout=150, interval=0.5, message="stalled")
        deaths += await asyncio.to_thread(restart_the_dead, module_stack)

        async def others_done() -> bool:
            for task_id in others:
                task = (await c.get(f"/v1/tasks/{task_id}")).json()
                if task["status"] != "COMPLETED":
                    return False
            return True

        await wait_for_async(others_done, timeout=60, interval=0.5, message="the other work")
        events = (await c.get(f"/v1/tasks/{crash['id']}/events")).json()["items"]
    [dead_lettered] = [e for e in events if e["type"] == "task.dead_lettered"]
    async with httpx.AsyncClient(
        base_url=module_stack.api.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    ) as admin:

        async def parked() -> dict[str, Any] | None:
            response = await admin.get(
                f"/v1/dead-letters/{dead_lettered['data']['dead_letter_id']}"
            )
            return response.json() if response.status_code == 200 else None

        record = await wait_for_async(parked, timeout=30, message="the dead letter")

    assert (dead["status"], dead["error"]["type"]) == ("DEAD_LETTER", "TaskStalled")
    # The first attempt and two take-overs killed an executor each; the third take-over
    # found the limit reached and ran nothing.
    assert deaths == 3
    assert dead["attempts"] == 3  # each died, whether or not its start was announced
    assert (dead_lettered["data"]["reason"], dead_lettered["data"]["stalls"]) == ("stalled", 3)
    assert record["reason"] == "stalled"
    assert len(others) > 10
