"""Republishing committed events as CloudEvents, confirmed, then acking.

The aggregator hands events over only after committing the state they announce, so a
subscriber that reads the task on an event sees at least that state. CloudEvent ids are
the event ids: a redelivered batch republishes the same ids, which subscribers dedupe.
A hand-off is acked only once the broker has confirmed every CloudEvent in it, so a
bridge or broker restart redelivers it instead of losing it. Internal-only event types
(``awaiting_children``, ``cancel_requested``, ``replayed``, ``discarded``) are not
published: subscribers get the architecture's nine types.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.messages.cloudevents import is_external, to_amqp_body, to_cloudevent
from taskcore.messages.envelope import CommittedBatch, CommittedEvent
from taskcore.messages.topology import BRIDGE_QUEUE, EXTERNAL_EVENTS_EXCHANGE
from taskcore.poison import DEFAULT_MAX_MESSAGE_BYTES, dead_letter_if_too_large, dead_letter_poison

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = 0.5


class Bridge:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        prefetch: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.connection = connection
        self.publisher = publisher
        self.prefetch = prefetch
        self.max_message_bytes = max_message_bytes
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        # One hand-off at a time, so events leave in the order the aggregator committed them.
        self._order = asyncio.Lock()

    async def start(self) -> None:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        # ensure=True declares it passively, which registers it with the robust channel:
        # a queue fetched unchecked is not restored, nor its consumer, after a reconnect.
        self._queue = await channel.get_queue(BRIDGE_QUEUE, ensure=True)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop consuming and let the hand-off being published finish."""
        if self._queue is not None and self._tag:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s), self._order:
                pass

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if await dead_letter_if_too_large(
            self.publisher, message, limit=self.max_message_bytes, source="event-bridge"
        ):
            return
        try:
            outgoing = [
                _amqp_cloudevent(item)
                for item in CommittedBatch.model_validate_json(message.body).items
                if is_external(item.event.type)
            ]
        except (ValidationError, ValueError, TypeError) as exc:
            await dead_letter_poison(
                self.publisher, message, reason="malformed", error=exc, source="event-bridge"
            )
            return
        start = time.monotonic()
        try:
            async with self._order:
                await asyncio.gather(
                    *(self.publisher.publish(EXTERNAL_EVENTS_EXCHANGE, "", m) for m, _ in outgoing)
                )
        except Exception:
            log.exception(
                "Publishing %d CloudEvents failed; the hand-off will be redelivered.", len(outgoing)
            )
            await asyncio.sleep(RETRY_BACKOFF_S)
            with contextlib.suppress(Exception):  # a dead channel redelivers it anyway
                await message.nack(requeue=True)
            return
        with contextlib.suppress(Exception):
            await message.ack()
        metrics.BRIDGE_PUBLISH_SECONDS.observe(time.monotonic() - start)
        for _, short_name in outgoing:
            metrics.BRIDGE_PUBLISHED.labels(short_name).inc()


def _amqp_cloudevent(item: CommittedEvent) -> tuple[aio_pika.Message, str]:
    body, content_type = to_amqp_body(to_cloudevent(item))
    msg = amqp_message(
        body,
        content_type=content_type,
        message_id=item.event.event_id,
        correlation_id=item.event.task_id,
        # Published inside the trace of the code that produced the event.
        headers={"traceparent": item.event.traceparent} if item.event.traceparent else None,
    )
    return msg, item.event.type.short_name
