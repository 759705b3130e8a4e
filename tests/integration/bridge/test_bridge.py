"""The event bridge on the real broker: CloudEvents the SDK reads, data that matches the
published schemas, ids stable across redelivery, nothing lost across restarts."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType, TaskEvent
from taskcore.messages.cloudevents import EXTERNAL_DATA, is_external
from taskcore.messages.envelope import CommittedBatch, CommittedEvent
from taskcore.messages.topology import DEAD_LETTER_QUEUE
from taskcore.testing import wait_for_async
from taskcore_aggregator.projection import fold_from

from tests.integration.aggregator.chaos import History, Scenario, error, play

from .conftest import BRIDGE_CONNECTION, Subscriber, hand_off, raw_hand_off, running_bridge

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"


def every_kind_of_event() -> list[CommittedEvent]:
    """Committed events of every type our producers emit, with the state after each."""
    rng = random.Random(31)
    scenario = Scenario()
    lives: list[History] = []
    replayed = scenario.new_task(rng, kind="replayed")
    lives.append(replayed)
    parent = scenario.new_task(rng, kind="parent", policy="threshold", threshold=0.5)
    parent.claim(1, progress=1)
    parent.add(EventType.AWAITING_CHILDREN, {"result": {"submitted": 2}})
    subtasks = {"total": 2, "completed": 1, "failed": 1}
    parent.add(
        EventType.COMPLETED_WITH_ERRORS,
        {"result": {"submitted": 2}, "subtasks": subtasks, "error": error("1 of 2")},
    )
    lives.append(parent)
    failing = scenario.new_task(rng, kind="parent", policy="fail_fast")
    failing.add(EventType.STEP_FAILED, {"step_id": "s1", "error": error("no such reference")})
    failing.add(EventType.FAILED, {"subtasks": subtasks, "error": error("fail_fast")})
    lives.append(failing)
    cancelled = scenario.new_task(rng)
    cancelled.claim(1, progress=1)
    cancelled.add(EventType.USAGE_RECORDED, {
        "provider": "offline", "model": "m", "prompt_tokens": 3, "completion_tokens": 1,
        "cost_nanos": 0, "currency": "USD", "user_id": "alice", "task_type": "diag.noop",
        "tier": "paid",
    })  # fmt: skip
    cancelled.add(EventType.CANCEL_REQUESTED, {"reason": "user"})
    cancelled.add(EventType.CANCELLED, {"reason": "user"})
    lives.append(cancelled)
    discarded = scenario.new_task(rng)
    play(discarded, "dead", rng)
    discarded.add(EventType.DISCARDED, {"by": "root"})
    lives.append(discarded)
    items: list[CommittedEvent] = []
    for life in lives:
        items.extend(fold_from(None, life.events)[1])
    assert {i.event.type for i in items} == set(EventType)
    return items


async def received_all(subscriber: Subscriber, ids: set[str], within: float = 30) -> None:
    async def arrived() -> bool:
        return ids <= set(subscriber.ids())

    await wait_for_async(arrived, timeout=within, interval=0.05, message=f"{len(ids)} events")


def validator(short_name: str) -> Any:
    return jsonschema_rs.validator_for(json.loads((SCHEMAS / f"{short_name}.json").read_text()))


async def test_committed_events_leave_as_cloudevents_with_data_the_schemas_describe(
    rabbitmq_url: str, publisher: Publisher, subscriber: Subscriber
) -> None:
    items = every_kind_of_event()
    external = [i for i in items if is_external(i.event.type)]
    async with running_bridge(rabbitmq_url):
        await hand_off(publisher, CommittedBatch(items=items))
        await received_all(subscriber, {i.event.event_id for i in external})
    # Every one parses with the SDK, in structured mode, with the event id as its id
    assert subscriber.errors == []
    assert subscriber.ids() == [i.event.event_id for i in external]  # committed order
    for received, item in zip(subscriber.received, external, strict=True):
        event = received.event
        assert received.content_type == "application/cloudevents+json"
        assert received.message_id == item.event.event_id
        assert event.get_specversion() == "1.0"
        assert event.get_type() == f"io.taskcore.task.{item.event.type.short_name}"
        assert event.get_subject() == item.event.task_id
        assert event.get_time() == item.event.occurred_at
        data = event.get_data()
        assert isinstance(data, dict)
        assert data["status"] == item.task["status"]
        assert data["sequence"] == item.event.sequence
        # and its data is valid for the published JSON Schema of its type
        errors = [e.message for e in validator(item.event.type.short_name).iter_errors(data)]
        assert errors == [], (item.event.type, data)
    # The internal-only types never leave
    types = {str(r.event.get_type()).removeprefix("io.taskcore.task.") for r in subscriber.received}
    assert types == {t.short_name for t in EXTERNAL_DATA}


async def test_a_redelivered_hand_off_republishes_the_same_ids_and_bodies(
    rabbitmq_url: str, publisher: Publisher, subscriber: Subscriber
) -> None:
    items = [i for i in every_kind_of_event() if is_external(i.event.type)][:5]
    async with running_bridge(rabbitmq_url):
        for _ in range(2):
            await hand_off(publisher, CommittedBatch(items=items))

        async def twice() -> bool:
            return len(subscriber.received) == 2 * len(items)

        await wait_for_async(twice, timeout=20, message="both deliveries")
    first, second = subscriber.received[: len(items)], subscriber.received[len(items) :]
    assert [r.event.get_id() for r in first] == [r.event.get_id() for r in second]
    assert [r.body for r in first] == [r.body for r in second]


def batches(n: int, per: int = 4) -> list[CommittedBatch]:
    """``n`` hand-offs of progress events, ``per`` each, all with distinct ids."""
    task = {
        "task_type": "diag.sleep",
        "user_id": "alice",
        "status": "RUNNING",
        "parent_task_id": None,
        "root_task_id": "t-1",
    }
    out = []
    for b in range(n):
        items = [
            CommittedEvent(
                event=TaskEvent(
                    event_id=f"t-1:{b * per + k + 2}",
                    task_id="t-1",
                    sequence=b * per + k + 2,
                    type=EventType.PROGRESS,
                    occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
                    data={"progress": {"n": b * per + k}},
                ),
                task=task,
            )
            for k in range(per)
        ]
        out.append(CommittedBatch(items=items))
    return out


def ids_of(hand_offs: list[CommittedBatch]) -> set[str]:
    return {i.event.event_id for b in hand_offs for i in b.items}


async def test_nothing_is_lost_when_the_bridge_stops_and_another_starts(
    rabbitmq_url: str, publisher: Publisher, subscriber: Subscriber
) -> None:
    hand_offs = batches(500)
    async with running_bridge(rabbitmq_url):
        publishing = asyncio.gather(*(hand_off(publisher, b) for b in hand_offs))

        async def some() -> bool:
            return len(subscriber.received) > 40

        await wait_for_async(some, timeout=20, message="the bridge at work")
    # the first bridge stopped midway; what it had not acked waits for the next one
    await publishing
    assert not ids_of(hand_offs) <= set(subscriber.ids())
    async with running_bridge(rabbitmq_url):
        await received_all(subscriber, ids_of(hand_offs))
    assert subscriber.errors == []


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def close_connections_named(vhost: str, name: str) -> int:
    """Make the broker drop this vhost's client connections of that name, as a broker
    restart would (and no one else's: other tests share the broker)."""
    described = json.loads(
        rabbitmqctl(
            "list_connections", "vhost", "peer_port", "client_properties", "--formatter", "json"
        )
    )
    ports = {
        str(c["peer_port"])
        for c in described
        if c["vhost"] == vhost and ["connection_name", "longstr", name] in c["client_properties"]
    }
    rows = [
        line.split("\t")
        for line in rabbitmqctl("list_connections", "pid", "vhost", "peer_port").splitlines()[1:]
    ]
    pids = [pid for pid, v, port in rows if v == vhost and port in ports]
    for pid in pids:
        rabbitmqctl("close_connection", pid, "test: broker-side close")
    return len(pids)


async def test_nothing_is_lost_when_the_broker_drops_the_bridge_connection(
    rabbitmq_url: str, vhost: str, publisher: Publisher, subscriber: Subscriber
) -> None:
    hand_offs = batches(200)
    async with running_bridge(rabbitmq_url):
        publishing = asyncio.gather(*(hand_off(publisher, b) for b in hand_offs))

        async def some() -> bool:
            return len(subscriber.received) > 40

        await wait_for_async(some, timeout=20, message="the bridge at work")
        # When the broker closes the bridge's connection mid-stream
        assert await asyncio.to_thread(close_connections_named, vhost, BRIDGE_CONNECTION) == 1
        await publishing
        # Then the bridge reconnects by itself and every event still arrives
        await received_all(subscriber, ids_of(hand_offs), within=60)
    assert subscriber.errors == []


async def test_an_unreadable_hand_off_is_dead_lettered_and_the_next_one_flows(
    rabbitmq_url: str, publisher: Publisher, subscriber: Subscriber, connection: Any
) -> None:
    good = batches(1)
    async with running_bridge(rabbitmq_url):
        await raw_hand_off(publisher, b'{"items": [{"event": 1}]}')
        await hand_off(publisher, good[0])
        await received_all(subscriber, ids_of(good))
    channel = await connection.channel()
    queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)
    dead = await queue.get(fail=False, no_ack=True)
    assert dead is not None
    assert dead.body == b'{"items": [{"event": 1}]}'
    assert dead.headers["x-dead-reason"] == "malformed"
