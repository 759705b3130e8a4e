"""A consumer dead-letters a message over TASKCORE_MAX_MESSAGE_BYTES (reason too_large)
before parsing it, and goes on with the next one. The aggregator and the event bridge,
in-process, on the real broker and store."""

from __future__ import annotations

from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher, connect_broker, message
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.messages.envelope import EventBatch
from taskcore.messages.topology import (
    COMMITTED_ROUTING_KEY,
    DEAD_LETTER_QUEUE,
    INTERNAL_EVENTS_EXCHANGE,
    declare_topology,
)
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_event_bridge.consumer import Bridge

from tests.integration.aggregator.harness import running_aggregator

LIMIT = 4096
OVERSIZED = b'{"events": [' + b" " * (LIMIT + 1) + b"]}"


async def dead_lettered(connection: AbstractRobustConnection) -> AbstractIncomingMessage:
    channel = await connection.channel()
    queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=False)

    async def one() -> AbstractIncomingMessage | None:
        return await queue.get(fail=False, no_ack=True)

    return await wait_for_async(one, timeout=15, message="a message on the dead-letter queue")


def submitted(task_id: str) -> TaskEvent:
    return TaskEvent(
        event_id=event_id_for(task_id, 1),
        task_id=task_id,
        sequence=1,
        type=EventType.SUBMITTED,
        occurred_at=datetime.now(UTC),
        data={"user_id": "alice", "task_type": "diag.noop", "parameters": {}},
    )


async def test_the_aggregator_dead_letters_an_oversized_message_and_folds_the_next(
    settings: Settings, store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    limited = settings.model_copy(update={"max_message_bytes": LIMIT})
    async with running_aggregator(limited):
        await publisher.publish(
            INTERNAL_EVENTS_EXCHANGE, "task.batch", message(OVERSIZED, message_id="big-1")
        )
        event = submitted("t-after-big")
        await publisher.publish(
            INTERNAL_EVENTS_EXCHANGE,
            "task.batch",
            message(EventBatch(events=[event]).model_dump_json().encode()),
        )
        dead = await dead_lettered(connection)

        async def logged() -> bool:
            return await store.events.count_documents({"task_id": "t-after-big"}) == 1

        await wait_for_async(logged, timeout=15, message="the next message folded")

    assert dead.message_id == "big-1"
    assert dead.headers["x-dead-reason"] == "too_large"
    assert dead.headers["x-dead-source"] == "aggregator"
    assert dead.body == OVERSIZED


async def test_the_event_bridge_dead_letters_an_oversized_hand_off(
    rabbitmq_url: str, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    bridge_connection = await connect_broker(rabbitmq_url, name="test-bridge")
    try:
        await declare_topology(await bridge_connection.channel())
        bridge = Bridge(
            bridge_connection, await Publisher.open(bridge_connection), max_message_bytes=LIMIT
        )
        await bridge.start()
        try:
            await publisher.publish(
                INTERNAL_EVENTS_EXCHANGE,
                COMMITTED_ROUTING_KEY,
                message(OVERSIZED, message_id="big-2"),
            )
            dead = await dead_lettered(connection)
        finally:
            await bridge.stop()
    finally:
        await bridge_connection.close()

    assert dead.message_id == "big-2"
    assert dead.headers["x-dead-reason"] == "too_large"
    assert dead.headers["x-dead-source"] == "event-bridge"
    assert "more than the 4096 allowed" in dead.headers["x-dead-error"]
