"""Consuming internal events in batches: append, fold, commit, hand off, then ack.

A batch is acked only after its events are in the log, their projections are written,
the committed events are confirmed on their way to the event bridge and the parents they
touch are marked for a recount. Any failure before that nacks the batch back to the queue
(redelivery is safe: appends and folds are idempotent). A message that cannot be read, or
whose events cannot be folded, is dead-lettered with a reason, so it never blocks the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from taskcore import metrics
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.domain.events import TaskEvent
from taskcore.domain.task import Task
from taskcore.messages.envelope import CommittedBatch, CommittedEvent
from taskcore.messages.topology import (
    AGGREGATOR_QUEUE,
    COMMITTED_ROUTING_KEY,
    INTERNAL_EVENTS_EXCHANGE,
)
from taskcore.periodic import Periodic
from taskcore.poison import dead_letter_if_too_large, dead_letter_poison
from taskcore.registry import load_registry
from taskcore.settings import Settings

from taskcore_aggregator.config import AggregatorSettings
from taskcore_aggregator.decode import MalformedMessage, decode_events
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.recounts import ParentRefresher
from taskcore_aggregator.retention import Retention
from taskcore_aggregator.watchdog import Watchdog
from taskcore_aggregator.workflow_runtime import WorkflowRuntime

log = logging.getLogger(__name__)

Delivery = tuple[AbstractIncomingMessage, list[TaskEvent]]
RETRY_BACKOFF_S = 1.0


class Aggregator:
    def __init__(
        self,
        settings: Settings,
        config: AggregatorSettings,
        store: Store,
        connection: AbstractRobustConnection,
        publisher: Publisher,
    ) -> None:
        self.settings = settings
        self.config = config
        self.store = store
        self.connection = connection
        self.publisher = publisher
        self.projector = Projector(
            store,
            Retention(config.progress_retention),
            known_capacity=config.fold_cache_size,
            clear_after_s=config.outbox_clear_delay_seconds,
        )
        # The task types, for checking a workflow step's parameters once resolved.
        self.workflows = WorkflowRuntime(
            store,
            publisher,
            load_registry(settings),
            max_elements=settings.max_children,
            max_result_bytes=settings.max_result_bytes,
        )
        self.parents = ParentRefresher(
            store,
            publisher,
            min_interval_s=config.parent_recount_interval_seconds,
            workflows=self.workflows,
        )
        self.watchdog = Watchdog(
            store,
            publisher,
            interval_s=config.watchdog_interval_seconds,
            stale_s=config.watchdog_stale_seconds,
            workflows=self.workflows,
        )
        self._buffer: list[Delivery] = []
        self._buffered_events = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._clears = Periodic(
            "Clearing folded outbox entries", max(0.05, self.config.outbox_clear_delay_seconds / 2)
        )
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        channel = await self.connection.channel()
        # Messages, not events: a producer's message may carry many events, so this bounds
        # the buffer (and memory) at about fold_batch_size messages whatever the backlog.
        await channel.set_qos(prefetch_count=self.settings.fold_batch_size)
        # ensure=True declares it passively, which registers it with the robust channel:
        # a queue fetched unchecked is not restored, nor its consumer, after a reconnect.
        self._queue = await channel.get_queue(AGGREGATOR_QUEUE, ensure=True)
        self._tasks = [
            asyncio.create_task(self._run(), name="fold"),
            asyncio.create_task(self.parents.run_forever(), name="parent-recounts"),
            asyncio.create_task(self.watchdog.run_forever(), name="watchdog"),
            asyncio.create_task(self._clear_outboxes(), name="outbox-clears"),
        ]
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop consuming and let the batch in hand finish; unacked messages are redelivered.

        The loops are asked to stop rather than cancelled, so no store operation is cut
        off halfway; cancelling is the fallback once ``grace_s`` is over.
        """
        if self._queue is not None and self._tag:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        self._stopping = True
        self._wake.set()
        self.parents.stop()
        self.watchdog.stop()
        self._clears.stop()
        _, late = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _clear_outboxes(self) -> None:
        """Clear the outbox entries no projection write took along (``DeferredClears``),
        and, on the way out, every one still pending."""

        async def flush() -> float:
            await self.projector.flush_clears()
            return self._clears.interval_s

        await self._clears.run(flush)
        with contextlib.suppress(Exception):
            await self.projector.flush_clears(everything=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if await dead_letter_if_too_large(
            self.publisher, message, limit=self.settings.max_message_bytes, source="aggregator"
        ):
            return
        try:
            events = decode_events(message.body)
        except MalformedMessage as exc:
            await dead_letter_poison(
                self.publisher, message, reason="malformed", error=exc, source="aggregator"
            )
            return
        self._buffer.append((message, events))
        self._buffered_events += len(events)
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            linger = self.settings.fold_flush_ms
            if linger and self._buffered_events < self.settings.fold_batch_size:
                # A comparison knob (0 by default): without it a batch is whatever arrived
                # while the previous one was being folded, and an idle event waits for nothing.
                await asyncio.sleep(linger / 1000)
            batch = self._take_batch()
            if batch:
                await self._process(batch)
            if self._buffer:
                self._wake.set()

    def _take_batch(self) -> list[Delivery]:
        """Whole messages from the buffer, up to about ``fold_batch_size`` events."""
        taken, events = 0, 0
        while taken < len(self._buffer) and events < self.settings.fold_batch_size:
            events += len(self._buffer[taken][1])
            taken += 1
        batch, self._buffer = self._buffer[:taken], self._buffer[taken:]
        self._buffered_events -= events
        return batch

    async def _process(self, batch: list[Delivery]) -> None:
        events = [e for _, evs in batch for e in evs]
        try:
            result = await self.projector.fold_batch(events)
            await self._hand_off(result.committed)
            await self.parents.mark(parents_touched(result.touched.values()))
        except Exception:
            log.exception(
                "Folding a batch of %d events failed; it will be redelivered.", len(events)
            )
            await asyncio.sleep(RETRY_BACKOFF_S)  # back off so a sick store is not hammered
            for message, _ in batch:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
            return
        now = datetime.now(UTC)
        for e in events:
            metrics.AGGREGATOR_LAG_SECONDS.observe(max(0.0, (now - e.occurred_at).total_seconds()))
        for message, evs in batch:
            poisoned = sorted({e.task_id for e in evs} & result.unfoldable)
            if poisoned:
                error = ValueError(f"events of task(s) {', '.join(poisoned)} cannot be folded")
                await dead_letter_poison(
                    self.publisher, message, reason="unfoldable", error=error, source="aggregator"
                )
                continue
            with contextlib.suppress(Exception):  # a dead channel redelivers it anyway
                await message.ack()

    async def _hand_off(self, committed: list[CommittedEvent]) -> None:
        """Tell the event bridge what is committed; returns once the broker confirmed."""
        chunk = self.config.handoff_chunk
        await asyncio.gather(
            *(
                self.publisher.publish(
                    INTERNAL_EVENTS_EXCHANGE,
                    COMMITTED_ROUTING_KEY,
                    amqp_message(
                        CommittedBatch(items=committed[i : i + chunk]).model_dump_json().encode()
                    ),
                )
                for i in range(0, len(committed), chunk)
            )
        )


def parents_touched(tasks: Iterable[Task]) -> set[str]:
    """Parents whose counters a batch may have changed, and parents that may now close."""
    ids: set[str] = set()
    for task in tasks:
        if task.parent_task_id:
            ids.add(task.parent_task_id)
        if task.awaiting_children:
            ids.add(task.id)
    return ids
