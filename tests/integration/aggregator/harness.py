"""Running the aggregator in-process against the test's vhost and database, and
waiting for what it must produce."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Store, connect_mongo, doc_to_task, task_to_doc
from taskcore.adapters.rabbit import Publisher, connect_broker
from taskcore.domain.task import Task
from taskcore.messages.topology import AGGREGATOR_QUEUE, declare_topology
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_aggregator.config import AggregatorSettings
from taskcore_aggregator.consumer import Aggregator
from taskcore_aggregator.projection import to_store_precision

FAST = {
    "parent_recount_interval_seconds": 0.05,
    "watchdog_interval_seconds": 0.2,
    "watchdog_stale_seconds": 1.0,
}


@contextlib.asynccontextmanager
async def running_aggregator(settings: Settings, **config: Any) -> AsyncIterator[Aggregator]:
    """One aggregator replica with its own broker connection and store client."""
    connection = await connect_broker(settings.rabbitmq_url, name="test-aggregator")
    store = Store(connect_mongo(settings.mongo_url_or_default), settings.mongo_db)
    try:
        await declare_topology(await connection.channel())
        publisher = await Publisher.open(connection)
        aggregator = Aggregator(
            settings, AggregatorSettings(**{**FAST, **config}), store, connection, publisher
        )
        await aggregator.start()
        try:
            yield aggregator
        finally:
            await aggregator.stop()
    finally:
        await connection.close()
        await store.close()


def comparable(task: Task) -> dict[str, Any]:
    """A projection's fields as the store keeps them, counters aside (they are recounted)."""
    doc = task_to_doc(task)
    return {k: to_store_precision(v) for k, v in doc.items() if k != "subtasks"}


async def projections(store: Store) -> dict[str, Task]:
    return {d["_id"]: doc_to_task(d) async for d in store.tasks.find({})}


async def wait_for_projections(
    store: Store, expected: dict[str, Task], *, within: float = 60.0
) -> dict[str, Task]:
    want = {t: comparable(s) for t, s in expected.items()}

    async def equal() -> dict[str, Task]:
        live = await projections(store)
        same = all(t in live and comparable(live[t]) == w for t, w in want.items())
        return live if same else {}

    return await wait_for_async(equal, timeout=within, interval=0.1, message="projections")


async def wait_for_log(store: Store, count: int, *, within: float = 60.0) -> None:
    async def complete() -> bool:
        return await store.events.count_documents({}) >= count

    await wait_for_async(complete, timeout=within, interval=0.1, message=f"{count} logged")


async def queue_drained(connection: AbstractRobustConnection, *, within: float = 60.0) -> None:
    """Every message on the aggregator's queue is gone (acked, not just delivered)."""
    channel = await connection.channel()
    try:

        async def empty() -> bool:
            queue = await channel.declare_queue(AGGREGATOR_QUEUE, passive=True)
            return queue.declaration_result.message_count == 0

        await wait_for_async(empty, timeout=within, interval=0.1, message="queue drained")
    finally:
        await channel.close()
