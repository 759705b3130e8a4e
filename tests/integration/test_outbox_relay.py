"""The outbox relay on the real store and broker: a write whose publish was lost is sent
later, once per period however many relays sweep, and never while its writer may still
be publishing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Store, now_ms
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.topology import task_queue_name
from taskcore.outbox import OutboxRelay
from taskcore.submission import NewTask, new_task_document

AFTER_S = 5.0


async def stored_without_publish(store: Store, count: int, age_ms: int) -> list[str]:
    """Tasks whose writer stored them ``age_ms`` ago and died before publishing."""
    docs = []
    for _ in range(count):
        doc, _entry = new_task_document(
            NewTask(user_id="alice", task_type="diag.noop", parameters={}), datetime.now(UTC)
        )
        doc["outbox_at_ms"] = now_ms() - age_ms
        docs.append(doc)
    await store.tasks.insert_many(docs)
    return [d["_id"] for d in docs]


async def dispatched(connection: AbstractRobustConnection) -> list[str]:
    """Task ids of the dispatch messages waiting on the paid queue (taken off it)."""
    channel = await connection.channel()
    queue = await channel.get_queue(task_queue_name("paid"))
    ids = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        ids.append(message.correlation_id)
    await channel.close()
    return ids


def relay(store: Store, publisher: Publisher) -> OutboxRelay:
    return OutboxRelay(store.documents, publisher, after_s=AFTER_S, interval_s=1.0)


async def test_racing_relays_send_a_stale_entry_once(
    store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    lost = await stored_without_publish(store, 20, age_ms=60_000)
    relays = [relay(store, publisher) for _ in range(3)]  # say, one per service

    sent = await asyncio.gather(*(r.sweep() for r in relays))

    # Each entry (a dispatch and its task.submitted event) went out once, not once per relay.
    assert sum(sent) == 20
    assert sorted(await dispatched(connection)) == sorted(lost)


async def test_a_sent_entry_waits_a_period_before_it_is_sent_again(
    store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    [task_id] = await stored_without_publish(store, 1, age_ms=60_000)
    assert await relay(store, publisher).sweep() == 1
    # Still not folded (no aggregator here), but sent just now: not again yet
    assert await relay(store, publisher).sweep() == 0
    assert await dispatched(connection) == [task_id]


async def test_a_fresh_entry_is_left_to_its_writer(
    store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    await stored_without_publish(store, 1, age_ms=0)
    assert await relay(store, publisher).sweep() == 0
    assert await dispatched(connection) == []
