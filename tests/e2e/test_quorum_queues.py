"""TASKCORE_QUEUE_TYPE=quorum, end to end: the four services as real processes declare a
replicated topology on a fresh vhost of the real broker, and tasks run, retry through a
delay queue, dead-letter and reach subscribers through it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from taskcore.domain.retry_policy import DELAY_TIERS_S, delay_queue_name
from taskcore.messages.topology import (
    AGGREGATOR_QUEUE,
    BRIDGE_QUEUE,
    DEAD_LETTER_QUEUE,
    EXTERNAL_EVENTS_EXCHANGE,
    TopologyMismatch,
    declare_topology,
    task_queue_name,
)
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import ADMIN_KEY, USER_KEY

pytestmark = pytest.mark.e2e

STACK_ENV = {"TASKCORE_QUEUE_TYPE": "quorum"}
AUTH = {"Authorization": f"Bearer {USER_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def vhost_of(stack: Stack) -> str:
    return stack.env["RABBITMQ_URL"].rsplit("/", 1)[1].replace("%2F", "/")


def queues(vhost: str) -> dict[str, dict[str, Any]]:
    """name -> {type, arguments} of every queue in ``vhost``, as the broker reports them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "arguments",
         "--formatter", "json"],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return {q["name"]: q for q in json.loads(listed.stdout)}


@pytest.fixture(scope="module")
async def http(module_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=module_stack.api.url, headers=AUTH, timeout=10) as c:
        yield c


async def finished(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]

    async def done() -> dict[str, Any] | None:
        task: dict[str, Any] = (await http.get(f"/v1/tasks/{task_id}")).json()
        return task if task["status"] not in ("QUEUED", "RUNNING", "RETRYING") else None

    return await wait_for_async(done, timeout=30, message=f"task {task_id} finished")


async def test_every_durable_queue_is_a_quorum_queue_without_priorities(
    module_stack: Stack,
) -> None:
    declared = await asyncio.to_thread(queues, vhost_of(module_stack))
    durable = [
        task_queue_name("paid"),
        task_queue_name("free"),
        AGGREGATOR_QUEUE,
        BRIDGE_QUEUE,
        DEAD_LETTER_QUEUE,
        *(delay_queue_name(s) for s in DELAY_TIERS_S),
    ]
    for name in durable:
        assert declared[name]["type"] == "quorum", name
        assert "x-max-priority" not in arguments(declared[name]), name
    paid = arguments(declared[task_queue_name("paid")])
    assert paid["x-dead-letter-exchange"] == "tasks.dlx"
    assert paid["x-dead-letter-strategy"] == "at-least-once"
    delay = arguments(declared[delay_queue_name(DELAY_TIERS_S[0])])
    assert delay["x-message-ttl"] == DELAY_TIERS_S[0] * 1000
    assert delay["x-dead-letter-exchange"] == "tasks.exchange"
    assert "x-dead-letter-exchange" not in arguments(declared[DEAD_LETTER_QUEUE])


def arguments(queue: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, _type, value in queue["arguments"]}


async def test_a_task_runs_and_its_cloudevents_reach_a_subscriber(
    module_stack: Stack, http: httpx.AsyncClient
) -> None:
    connection = await aio_pika.connect(module_stack.env["RABBITMQ_URL"])
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)  # a subscriber's own queue
        await queue.bind(EXTERNAL_EVENTS_EXCHANGE)

        task = await finished(http, {"task_type": "diag.noop"})

        types: list[str] = []

        async def completed_event() -> bool:
            while (msg := await queue.get(fail=False, no_ack=True)) is not None:
                event = json.loads(msg.body)
                if event["subject"] == task["id"]:
                    types.append(event["type"])
            return "io.taskcore.task.completed" in types

        await wait_for_async(completed_event, timeout=15, message="the completed CloudEvent")
    finally:
        await connection.close()
    assert task["status"] == "COMPLETED"
    assert types[0] == "io.taskcore.task.submitted"


async def test_a_retry_goes_through_a_delay_queue_and_succeeds(http: httpx.AsyncClient) -> None:
    task = await finished(http, {"task_type": "diag.fail", "parameters": {"times": 1}})

    assert task["status"] == "COMPLETED"
    assert task["attempts"] == 2
    events = (await http.get(f"/v1/tasks/{task['id']}/events")).json()["items"]
    assert "task.retrying" in [e["type"] for e in events]


async def test_a_task_that_cannot_succeed_is_dead_lettered_and_parked(
    module_stack: Stack, http: httpx.AsyncClient
) -> None:
    body = {"task_type": "diag.fail", "parameters": {"times": 9, "retryable": False}}
    task = await finished(http, body)
    assert task["status"] == "DEAD_LETTER"

    async def parked() -> list[dict[str, Any]] | None:
        response = await http.get("/v1/dead-letters", headers=ADMIN, params={"task_id": task["id"]})
        items: list[dict[str, Any]] = response.json()["items"]
        return [i for i in items if i["task_id"] == task["id"]] or None

    [letter] = await wait_for_async(parked, timeout=15, message="the dead letter parked")
    assert letter["reason"] == "non_retryable"


async def test_a_service_configured_for_classic_queues_is_refused_with_a_clear_error(
    module_stack: Stack,
) -> None:
    connection = await aio_pika.connect(module_stack.env["RABBITMQ_URL"])
    try:
        with pytest.raises(TopologyMismatch, match="same TASKCORE_QUEUE_TYPE"):
            await declare_topology(await connection.channel(), "classic")
    finally:
        await connection.close()
