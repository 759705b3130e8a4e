"""Mandatory publishes on the real broker: a message no queue is bound for is returned,
counted and raised to its sender, whose outbox keeps it until the topology can route it."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import MessageReturned, Publisher, message
from taskcore.messages.topology import (
    EXTERNAL_EVENTS_EXCHANGE,
    TASKS_EXCHANGE,
    dispatch_routing_key,
    task_queue_name,
)
from taskcore.outbox import OutboxRelay
from taskcore.submission import NewTask, submit_tasks


def returned(exchange: str, handling: str) -> float:
    labels = {"exchange": exchange, "handling": handling}
    return REGISTRY.get_sample_value("taskcore_amqp_returned_total", labels) or 0.0


async def unbind_paid_queue(connection: AbstractRobustConnection) -> None:
    channel = await connection.channel()
    queue = await channel.get_queue(task_queue_name("paid"))
    await queue.unbind(TASKS_EXCHANGE, routing_key=dispatch_routing_key("paid"))
    await queue.unbind(TASKS_EXCHANGE, routing_key="*.paid")
    await channel.close()


async def bind_paid_queue(connection: AbstractRobustConnection) -> None:
    channel = await connection.channel()
    queue = await channel.get_queue(task_queue_name("paid"))
    await queue.bind(TASKS_EXCHANGE, routing_key=dispatch_routing_key("paid"))
    await channel.close()


async def waiting_on_paid_queue(connection: AbstractRobustConnection) -> list[str]:
    """Task ids of the dispatches waiting on the paid queue (taken off it)."""
    channel = await connection.channel()
    queue = await channel.get_queue(task_queue_name("paid"))
    ids = []
    while (msg := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(str(msg.correlation_id))
    await channel.close()
    return ids


async def test_a_publish_no_queue_is_bound_for_is_counted_and_raised(publisher: Publisher) -> None:
    before = returned(TASKS_EXCHANGE, "error")

    with pytest.raises(MessageReturned) as raised:
        await publisher.publish(TASKS_EXCHANGE, "no-such-tier", message(b"{}", message_id="m-1"))

    assert raised.value.exchange == TASKS_EXCHANGE
    assert raised.value.routing_key == "no-such-tier"
    assert "NO_ROUTE" in str(raised.value)
    assert returned(TASKS_EXCHANGE, "error") == before + 1


async def test_an_external_event_with_no_subscriber_is_counted_but_not_an_error(
    publisher: Publisher,
) -> None:
    before = returned(EXTERNAL_EVENTS_EXCHANGE, "no_listener")

    await publisher.publish(EXTERNAL_EVENTS_EXCHANGE, "", message(b"{}", message_id="e-1"))

    assert returned(EXTERNAL_EVENTS_EXCHANGE, "no_listener") == before + 1


async def test_a_return_is_credited_to_its_own_publish_when_an_id_is_in_flight_twice(
    publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    # Two publishes with one message id at once: one routable, one not. The broker's
    # return names only the message id, so only the unroutable one may fail.
    outcomes = await asyncio.gather(
        publisher.publish(TASKS_EXCHANGE, "no-such-tier", message(b"{}", message_id="same")),
        publisher.publish(
            TASKS_EXCHANGE, "paid", message(b"{}", message_id="same", correlation_id="routed")
        ),
        return_exceptions=True,
    )

    assert isinstance(outcomes[0], MessageReturned)
    assert outcomes[1] is None
    assert await waiting_on_paid_queue(connection) == ["routed"]


async def test_a_task_submitted_while_its_queue_is_unbound_is_dispatched_once_it_is_bound(
    store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    # Given a paid queue that tasks.exchange cannot route to
    await unbind_paid_queue(connection)
    relay = OutboxRelay(store.documents, publisher, after_s=0.0, interval_s=1.0)
    before = returned(TASKS_EXCHANGE, "error")

    # When a task is submitted, and the relay tries again
    [submitted] = await submit_tasks(
        store, publisher, [NewTask(user_id="alice", task_type="diag.noop", parameters={})]
    )
    task_id = submitted.task.id
    assert await relay.sweep() == 0

    # Then the dispatch was returned each time, and the task keeps its outbox entry
    assert returned(TASKS_EXCHANGE, "error") == before + 2
    doc = await store.tasks.find_one({"_id": task_id})
    assert doc is not None
    [entry] = doc["outbox"].values()
    assert entry["dispatch"]["message"]["task_id"] == task_id
    assert await waiting_on_paid_queue(connection) == []

    # And once the binding exists, the relay dispatches it
    await bind_paid_queue(connection)
    assert await relay.sweep() == 1
    assert await waiting_on_paid_queue(connection) == [task_id]
