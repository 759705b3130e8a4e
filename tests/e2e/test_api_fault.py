"""Fault injection: the API dies between the store write and the publish.

The test-only hook ``TASKCORE_FAULT_CRASH_AFTER_STORE_WRITE=1`` makes the API process
``os._exit(137)`` right after the new task's document is inserted and before anything is
published. The task must then be neither lost (it runs once an API is back, through the
outbox relay) nor dispatched while the API is down, and no message may exist for a task
that does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from taskcore.adapters.mongo import Store
from taskcore.testing import wait_for_async
from taskcore.testing.processes import ServiceProcess
from taskcore_api.faults import CRASH_AFTER_STORE_WRITE, CRASH_EXIT_STATUS

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {USER_KEY}"}


@pytest.fixture
def services(
    stack_env: dict[str, str], tmp_path: Path, store: Store
) -> Iterator[dict[str, ServiceProcess]]:
    started = {
        name: ServiceProcess(name, stack_env, tmp_path).start()
        for name in ("aggregator", "event-bridge")
    }
    started["executor"] = ServiceProcess("executor", stack_env, tmp_path)
    try:
        yield started
    finally:
        for process in started.values():
            process.stop()
            print(f"--- {process.service}\n{process.log_tail()}")


async def queue_depth(rabbitmq_url: str, queue: str) -> int:
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_a_crash_between_store_write_and_publish_loses_nothing_and_dispatches_once(
    services: dict[str, ServiceProcess],
    stack_env: dict[str, str],
    tmp_path: Path,
    store: Store,
    rabbitmq_url: str,
) -> None:
    # Given an API armed to die right after its next store write
    api = ServiceProcess("api", {**stack_env, CRASH_AFTER_STORE_WRITE: "1"}, tmp_path).start()
    body = {"task_type": "diag.noop"}
    key = {"Idempotency-Key": "crash-test-1", **AUTH}

    # When a client submits, the API dies at its first publish: the answer (202, sent as
    # soon as the task is stored) may or may not have reached the client by then
    with contextlib.suppress(httpx.TransportError):
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            answered = await client.post("/v1/tasks", json=body, headers=key)
            assert answered.status_code == 202
    assert api.process is not None
    assert api.process.wait(timeout=10) == CRASH_EXIT_STATUS

    # Then the task is stored, with its dispatch waiting in its outbox, and nothing left
    [doc] = await store.tasks.find({}).to_list(None)
    assert doc["status"] == "QUEUED"
    assert len(doc["outbox"]) == 1
    [entry] = doc["outbox"].values()
    assert entry["dispatch"]["message"]["task_id"] == doc["_id"]
    assert await queue_depth(rabbitmq_url, "tasks.paid.queue") == 0  # not dispatched
    assert await store.events.count_documents({}) == 0  # no event published either

    # When the API is back (and an executor runs), and the client retries its request
    services["executor"].start()
    api = ServiceProcess("api", stack_env, tmp_path, port=api.port).start()
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
            retried = await client.post("/v1/tasks", json=body, headers=key)

            # then the retry names the same task, and the relay has dispatched it: it runs
            assert retried.status_code == 202
            assert retried.json()["id"] == doc["_id"]

            async def finished() -> dict[str, Any] | None:
                task: dict[str, Any] = (
                    await client.get(f"/v1/tasks/{doc['_id']}", headers=AUTH)
                ).json()
                return task if task["status"] == "COMPLETED" else None

            task = await wait_for_async(
                finished, timeout=30, message="the crashed submission to complete"
            )
            events = (await client.get(f"/v1/tasks/{doc['_id']}/events", headers=AUTH)).json()
    finally:
        api.stop()
    assert task["attempts"] == 1
    assert [e["type"] for e in events["items"]] == [
        "task.submitted",
        "task.started",
        "task.completed",
    ]
    assert await store.tasks.count_documents({}) == 1
    assert await queue_depth(rabbitmq_url, "tasks.dlq.queue") == 0
    assert await store.dead_letters.count_documents({}) == 0
