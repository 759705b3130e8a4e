"""200 concurrent SSE streams, and many ?wait= submissions, on one API process, fed by one
subscription.

The API runs in this process (so the test can watch its store commands through PyMongo's
command monitoring); the executor, aggregator and event bridge run as real processes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import monitoring
from taskcore.adapters.mongo import Store
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore.testing.processes import ServiceProcess

from tests.integration.api.support import ALICE, Sse, running_api, sse_events

pytestmark = pytest.mark.e2e

TASKS = 100
STREAMS_PER_TASK = 2
WAITS = 50


class TaskLookups(monitoring.CommandListener):
    """Counts single-task reads (``find`` by ``_id``) on one database's tasks collection."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.by_id = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        if (
            event.database_name == self.database
            and event.command_name == "find"
            and command.get("find") == "tasks"
            and isinstance(command.get("filter", {}).get("_id"), str)
        ):
            self.by_id += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def lookups(mongo_db_name: str) -> TaskLookups:
    listener = TaskLookups(mongo_db_name)
    # Global registration: applies to the clients created from now on (the API's).
    monitoring.register(listener)
    return listener


@pytest.fixture
def pipeline(
    stack_env: dict[str, str], tmp_path: Path, store: Store
) -> Iterator[dict[str, ServiceProcess]]:
    processes = {
        name: ServiceProcess(name, stack_env, tmp_path).start(wait_ready=False)
        for name in ("aggregator", "event-bridge")
    }
    processes["executor"] = ServiceProcess("executor", stack_env, tmp_path)
    try:
        for p in processes.values():
            if p.process is not None:
                p.wait_ready()
        yield processes
    finally:
        for p in processes.values():
            p.stop()


async def sse_gauge(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    match = re.search(r"^taskcore_sse_clients (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


async def test_two_hundred_streams_share_one_subscription_and_poll_nothing(
    settings: Settings, pipeline: dict[str, ServiceProcess], lookups: TaskLookups
) -> None:
    # One user holds every stream here: above the per-user cap's default of 100.
    overrides = {"sse_ping_seconds": 5.0, "max_streams_per_user": 1000}
    async with running_api(settings.model_copy(update=overrides)) as api:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with api.client(ALICE, limits=limits, timeout=60) as client:
            batch = await client.post(
                "/v1/tasks/batch",
                json={
                    "tasks": [{"task_type": "diag.sleep", "parameters": {"seconds": 0.5}}] * TASKS
                },
            )
            ids = [r["task"]["id"] for r in batch.json()["results"]]
            opened = 0
            all_open = asyncio.Event()

            async def follow(task_id: str) -> list[Sse]:
                nonlocal opened
                events: list[Sse] = []
                async with client.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
                    assert response.status_code == 200
                    async for event in sse_events(response):
                        events.append(event)
                        if len(events) == 1:
                            opened += 1
                            if opened == TASKS * STREAMS_PER_TASK:
                                all_open.set()
                return events

            streams = [
                asyncio.create_task(follow(task_id))
                for task_id in ids
                for _ in range(STREAMS_PER_TASK)
            ]
            await asyncio.wait_for(all_open.wait(), timeout=60)
            # every stream open at once on this one process, before any task has run
            assert await sse_gauge(client) == TASKS * STREAMS_PER_TASK
            reads_to_open = lookups.by_id

            pipeline["executor"].start()  # now the tasks run
            results = await asyncio.wait_for(asyncio.gather(*streams), timeout=120)
            reads_while_live = lookups.by_id - reads_to_open

            async def all_closed() -> bool:
                return await sse_gauge(client) == 0

            await wait_for_async(all_closed, timeout=10, message="every stream closed")

            # and many ?wait= submissions cost one read each (the answer), no polling
            before_waits = lookups.by_id
            # (a fresh client: the server may be closing the streams' idle connections)
            async with api.client(ALICE, limits=limits, timeout=60) as waiter:
                waits = await asyncio.gather(
                    *(
                        waiter.post(
                            "/v1/tasks",
                            params={"wait": 30},
                            json={"task_type": "diag.sleep", "parameters": {"seconds": 0.5}},
                        )
                        for _ in range(WAITS)
                    )
                )
            reads_for_waits = lookups.by_id - before_waits
    assert all(events[0].event == "state" for events in results)
    assert all(events[-1].event == "task.completed" for events in results)
    assert all(
        [int(e.id or -1) for e in events] == sorted({int(e.id or -1) for e in events})
        for events in results
    )
    # one read of the task per stream to start, and none while events flowed
    assert reads_to_open <= TASKS * STREAMS_PER_TASK + 5
    assert reads_while_live <= 5, f"{reads_while_live} task reads while streaming"
    assert {w.status_code for w in waits} == {200}
    assert {w.json()["status"] for w in waits} == {"COMPLETED"}
    assert reads_for_waits <= WAITS + 5, f"{reads_for_waits} task reads for {WAITS} waits"
