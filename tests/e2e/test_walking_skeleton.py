"""One task from HTTP through executor, aggregator and bridge, on the real broker."""

from __future__ import annotations

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack
from taskcore.testing.subscriber import EventSubscriber

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {USER_KEY}"}


async def test_noop_task_completes_and_its_cloudevents_arrive_in_order(
    stack: Stack, rabbitmq_url: str
) -> None:
    async with EventSubscriber(rabbitmq_url) as subscriber:
        # Given the four services running, when a user submits diag.noop
        async with httpx.AsyncClient(base_url=stack.api.url, headers=AUTH, timeout=10) as http:
            response = await http.post("/v1/tasks", json={"task_type": "diag.noop"})
            assert response.status_code == 202, response.text
            task_id = response.json()["id"]
            # then GET right after the 202 returns the task
            assert (await http.get(f"/v1/tasks/{task_id}")).status_code == 200

            # and it becomes COMPLETED
            async def completed() -> dict[str, object] | None:
                body: dict[str, object] = (await http.get(f"/v1/tasks/{task_id}")).json()
                return body if body["status"] == "COMPLETED" else None

            task = await wait_for_async(completed, timeout=15, message="task COMPLETED")
        assert task["attempts"] == 1
        assert task["result"] == {}
        assert task["started_at"]
        assert task["finished_at"]

        # and a subscriber receives submitted, started, completed, in that order
        async def all_three() -> list[str] | None:
            types = subscriber.types_for(task_id)
            return types if len(types) >= 3 else None

        types = await wait_for_async(all_three, timeout=10, message="three CloudEvents")
        assert types == ["submitted", "started", "completed"]
        assert subscriber.errors == []
        events = subscriber.for_task(task_id)
        assert [e.get_data()["sequence"] for e in events] == sorted(  # type: ignore[index]
            e.get_data()["sequence"]
            for e in events  # type: ignore[index]
        )
        completed_event = events[-1]
        assert completed_event.get_data()["status"] == "COMPLETED"  # type: ignore[index]
        assert completed_event.get_id() == f"{task_id}:{completed_event.get_data()['sequence']}"  # type: ignore[index]
