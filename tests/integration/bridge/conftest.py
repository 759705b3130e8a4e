"""Fixtures for the event bridge's integration tests: the bridge in-process, a producer
that hands committed batches over as the aggregator does, and a raw subscriber."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from cloudevents.core.v1.event import CloudEvent
from taskcore.adapters.rabbit import Publisher, connect_broker
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.messages.cloudevents import from_amqp_body
from taskcore.messages.envelope import CommittedBatch
from taskcore.messages.topology import (
    COMMITTED_ROUTING_KEY,
    EXTERNAL_EVENTS_EXCHANGE,
    INTERNAL_EVENTS_EXCHANGE,
    declare_topology,
)
from taskcore_event_bridge.consumer import Bridge

BRIDGE_CONNECTION = "taskcore-event-bridge"


@dataclass(frozen=True)
class Received:
    message_id: str | None
    content_type: str | None
    body: bytes
    event: CloudEvent


@dataclass
class Subscriber:
    """Everything published on tasks.events.exchange, parsed with the CloudEvents SDK."""

    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        headers = {k: str(v) for k, v in (message.headers or {}).items()}
        try:
            event = from_amqp_body(message.body, message.content_type, headers)
        except Exception as exc:  # recorded: the tests assert there are none
            self.errors.append(f"{exc!r}: {message.body[:200]!r}")
            return
        self.received.append(
            Received(message.message_id, message.content_type, message.body, event)
        )

    def ids(self) -> list[str]:
        return [str(r.event.get_id()) for r in self.received]


@pytest.fixture
async def subscriber(connection: AbstractRobustConnection) -> AsyncIterator[Subscriber]:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(await channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE))
    sub = Subscriber()
    await queue.consume(sub.on_message, no_ack=True)
    yield sub
    await channel.close()


@contextlib.asynccontextmanager
async def running_bridge(
    rabbitmq_url: str,
) -> AsyncIterator[tuple[Bridge, AbstractRobustConnection]]:
    connection = await connect_broker(rabbitmq_url, name=BRIDGE_CONNECTION)
    try:
        await declare_topology(await connection.channel())
        bridge = Bridge(connection, await Publisher.open(connection))
        await bridge.start()
        try:
            yield bridge, connection
        finally:
            await bridge.stop()
    finally:
        await connection.close()


async def hand_off(publisher: Publisher, batch: CommittedBatch) -> None:
    """What the aggregator does after a commit."""
    body = batch.model_dump_json().encode()
    await publisher.publish(INTERNAL_EVENTS_EXCHANGE, COMMITTED_ROUTING_KEY, amqp_message(body))


async def raw_hand_off(publisher: Publisher, body: bytes) -> None:
    await publisher.publish(INTERNAL_EVENTS_EXCHANGE, COMMITTED_ROUTING_KEY, aio_pika.Message(body))
