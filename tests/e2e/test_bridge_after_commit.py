"""Through the whole stack: every external event announces committed state, parses with
the CloudEvents SDK, matches its published schema, and none is lost when the bridge dies.

The subscriber reads the task over HTTP the moment each event arrives, as a subscriber
reacting to events would, and records any read that shows an older state than the event.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import jsonschema_rs
import pytest
from aio_pika.abc import AbstractIncomingMessage
from taskcore.adapters.mongo import Store
from taskcore.domain.status import TERMINAL
from taskcore.messages.cloudevents import EXTERNAL_DATA, from_amqp_body
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE, declare_topology
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
VALIDATORS = {
    t.short_name: jsonschema_rs.validator_for(
        json.loads((SCHEMAS / f"{t.short_name}.json").read_text())
    )
    for t in EXTERNAL_DATA
}
TERMINAL_VALUES = {s.value for s in TERMINAL}


@dataclass
class ReadingSubscriber:
    """Parses each event with the SDK, then reads its task over HTTP at once."""

    api_url: str
    received: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> data
    deliveries: int = 0
    problems: list[str] = field(default_factory=list)
    pending_reads: set[asyncio.Task[None]] = field(default_factory=set)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.deliveries += 1
        headers = {k: str(v) for k, v in (message.headers or {}).items()}
        try:
            event = from_amqp_body(message.body, message.content_type, headers)
        except Exception as exc:  # recorded: the test asserts there are none
            self.problems.append(f"unparseable: {exc!r}")
            return
        data = event.get_data()
        assert isinstance(data, dict)
        short = str(event.get_type()).removeprefix("io.taskcore.task.")
        event_id = str(event.get_id())
        if event_id != f"{event.get_subject()}:{data['sequence']}":
            self.problems.append(f"id {event_id} is not subject:sequence")
        errors = [e.message for e in VALIDATORS[short].iter_errors(data)]
        if errors:
            self.problems.append(f"{short} data off its schema: {errors}")
        read = asyncio.create_task(self._read_task(event_id, data))
        self.pending_reads.add(read)
        read.add_done_callback(self.pending_reads.discard)

    async def _read_task(self, event_id: str, data: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.api_url, headers=AUTH, timeout=10) as http:
            task = (await http.get(f"/v1/tasks/{data['task_id']}")).json()
        if task["version"] < data["sequence"]:
            self.problems.append(f"{event_id}: read version {task['version']} < event")
        if data["status"] in TERMINAL_VALUES and task["status"] != data["status"]:
            self.problems.append(f"{event_id}: read {task['status']}, event {data['status']}")
        self.received[event_id] = data


async def submit(http: httpx.AsyncClient, task_type: str, parameters: dict[str, Any]) -> str:
    response = await http.post("/v1/tasks", json={"task_type": task_type, "parameters": parameters})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def external_event_ids(store: Store, roots: list[str]) -> set[str]:
    """Every event of these tasks and their children that subscribers must get."""
    children = [d["_id"] async for d in store.tasks.find({"parent_task_id": {"$in": roots}})]
    types = [f"task.{t.short_name}" for t in EXTERNAL_DATA]
    query = {"task_id": {"$in": roots + children}, "type": {"$in": types}}
    return {d["_id"] async for d in store.events.find(query, {"_id": 1})}


async def test_subscribers_reading_on_each_event_never_see_older_state_and_lose_nothing(
    stack: Stack, rabbitmq_url: str, store: Store
) -> None:
    subscriber = ReadingSubscriber(stack.api.url)
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(await channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE))
        await queue.consume(subscriber.on_message, no_ack=True)
        # Given tasks that complete, report progress, retry, and fan out
        async with httpx.AsyncClient(base_url=stack.api.url, headers=AUTH, timeout=10) as http:
            roots = [await submit(http, "diag.noop", {}) for _ in range(6)]
            roots += [await submit(http, "diag.sleep", {"seconds": 0.6}) for _ in range(3)]
            roots += [await submit(http, "diag.fail", {"times": 1}) for _ in range(3)]
            roots += [await submit(http, "diag.fanout", {"count": 4}) for _ in range(2)]

        # When the event bridge is killed while events flow, and started again
        async def flowing() -> bool:
            return subscriber.deliveries >= 10

        await wait_for_async(flowing, timeout=20, message="events flowing")
        bridge = stack.processes["event-bridge"][0]
        bridge.kill()
        bridge.start()

        # Then every task ends
        async def all_terminal() -> bool:
            query = {"$or": [{"_id": {"$in": roots}}, {"parent_task_id": {"$in": roots}}]}
            docs = await store.tasks.find(query, {"status": 1}).to_list(None)
            return len(docs) == len(roots) + 8 and all(d["status"] in TERMINAL_VALUES for d in docs)

        await wait_for_async(all_terminal, timeout=60, interval=0.2, message="all terminal")
        # and every external event of them reaches the subscriber
        expected = await external_event_ids(store, roots)

        async def all_received() -> set[str] | None:
            missing = expected - subscriber.received.keys()
            return None if missing else expected

        await wait_for_async(all_received, timeout=30, interval=0.1, message="every event")
        await asyncio.gather(*subscriber.pending_reads)
    finally:
        await connection.close()
    # each parsed with the SDK, matching its schema, and never ahead of what a read shows
    assert subscriber.problems == []
    assert subscriber.received.keys() == expected
    kinds = {data["status"] for data in subscriber.received.values()}
    assert {"QUEUED", "RUNNING", "RETRYING", "COMPLETED"} <= kinds
