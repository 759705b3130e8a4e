"""A CloudEvents subscriber that loses nothing across a broker restart.

``EventSubscriber`` listens on an exclusive, auto-deleted queue, which vanishes with its
connection: events published while the broker restarts would never reach it. This one
binds a durable named queue and acks each event only after recording it, so whatever the
broker held for it when it went down is delivered after it comes back. It may receive an
event twice (a redelivery, or the bridge republishing a hand-off); like every subscriber
it deduplicates by CloudEvent id (``unique_by_id``).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE, declare_topology
from taskcore.testing.subscriber import EventSubscriber

# Robust connections retry every 5 s by default; a test subscriber should be back sooner.
RECONNECT_INTERVAL_S = 1


class DurableEventSubscriber(EventSubscriber):
    def __init__(self, url: str, queue_name: str | None = None) -> None:
        super().__init__(url)
        self.queue_name = queue_name or f"test.subscriber.{uuid.uuid4().hex[:10]}"
        self._queue: AbstractQueue | None = None

    async def __aenter__(self) -> DurableEventSubscriber:
        self._connection = await aio_pika.connect_robust(
            self.url, reconnect_interval=RECONNECT_INTERVAL_S
        )
        self._channel = await self._connection.channel()
        await declare_topology(self._channel)
        self._queue = await self._channel.declare_queue(self.queue_name, durable=True)
        await self._queue.bind(await self._channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE))
        await self._queue.consume(self._on_durable_message)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._queue is not None:
            with contextlib.suppress(Exception):  # the vhost may be gone already
                await self._queue.delete(if_unused=False, if_empty=False)
        await super().__aexit__(*exc)

    async def _on_durable_message(self, message: AbstractIncomingMessage) -> None:
        await self._on_message(message)
        await message.ack()
