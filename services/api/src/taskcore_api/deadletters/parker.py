"""The consumer of ``tasks.dlq.queue``: every dead message becomes a durable record.

A message is acked only after its record is in the store (or was already: the record id
is the message id, so a redelivered or re-published dead letter is parked once). If the
store cannot take it, the message goes back to the queue: nothing dead is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store
from taskcore.messages.topology import DEAD_LETTER_QUEUE
from taskcore.poison import DEFAULT_MAX_MESSAGE_BYTES, too_large
from taskcore.registry import TaskTypeRegistry
from taskcore.taskdoc import STATE_FIELDS, ExecState

from taskcore_api.deadletters.records import DeadMessage, build_record, unreadable_record
from taskcore_api.deadletters.repository import DeadLetterRepository
from taskcore_api.deadletters.settings import DeadLetterSettings

log = logging.getLogger(__name__)

# After a store failure, wait before the message comes back, so a sick store is not hammered.
STORE_FAILURE_BACKOFF_S = 1.0


class DeadLetterParker:
    def __init__(
        self,
        store: Store,
        connection: AbstractRobustConnection,
        registry: TaskTypeRegistry,
        settings: DeadLetterSettings,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.store = store
        self.connection = connection
        self.registry = registry
        self.settings = settings
        self.max_message_bytes = max_message_bytes
        self.repo = DeadLetterRepository(store)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._channel = await self.connection.channel()
        await self._channel.set_qos(prefetch_count=self.settings.prefetch)
        # ensure=True declares it passively, which registers it with the robust channel:
        # a queue fetched unchecked is not restored, nor its consumer, after a reconnect.
        self._queue = await self._channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Already dead, so not dead-lettered again: parked unparsed, its body truncated.
        oversized = too_large(message, self.max_message_bytes) is not None
        try:
            record = await self.park(
                DeadMessage(
                    body=message.body,
                    headers=dict(message.headers or {}),
                    message_id=message.message_id,
                    content_type=message.content_type,
                    timestamp=message.timestamp,
                    routing_key=message.routing_key,
                ),
                too_large=oversized,
            )
        except Exception:
            log.exception("Parking a dead letter failed; it goes back to the queue.")
            await asyncio.sleep(STORE_FAILURE_BACKOFF_S)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await message.ack()
        if record is not None:
            log.warning(
                "Parked dead letter %s (%s, task %s).",
                record["_id"],
                record["reason"],
                record.get("task_id"),
            )

    async def park(self, message: DeadMessage, *, too_large: bool = False) -> Doc | None:
        """Store the record for ``message``; None when it was parked before.

        Only a store failure raises (and sends the message back to the queue): a message
        whose headers defeat ``build_record`` is parked with what can be read, so no dead
        letter comes back forever.
        """
        now, limit = datetime.now(UTC), self.settings.max_body_bytes
        try:
            record = build_record(message, now=now, max_body_bytes=limit, too_large=too_large)
        except Exception:
            log.exception("A dead letter's headers could not be read; parking what can be.")
            record = unreadable_record(message, now=now, max_body_bytes=limit)
        record.update(await self._lineage(record))
        if not await self.repo.park(record):
            return None
        task_type = record.get("task_type")
        label = task_type if task_type in self.registry else "unregistered"
        metrics.DEAD_LETTERS_PARKED.labels(record["reason"], label).inc()
        return record

    async def _lineage(self, record: Doc) -> Doc:
        """Which earlier dead letter's replay led here, and how many replays deep it is.

        A task's replays are counted on the task document by the replay itself (before it
        dispatches), so this reads the count the dying dispatch was sent under. A
        republished poison message names its predecessor in ``x-replay-of``.
        """
        previous_id = record.pop("replay_of_header", None)
        if previous_id:
            previous = await self.repo.get(previous_id)
            generation = int(previous.get("generation") or 0) + 1 if previous else 1
            return {"replay_of": previous_id, "generation": generation}
        task_id = record.get("task_id")
        if not (record.get("is_task_message") and task_id):
            return {}
        task = await self.store.documents.get(task_id, STATE_FIELDS)
        state = None if task is None else ExecState.of(task)
        if state is None or not state.replays:
            return {}
        return {"replay_of": state.last_replay_of, "generation": state.replays}
