"""Publishing what a task document's outbox holds, and re-publishing what stayed there.

Every step that changes a task's stored state and must then tell the broker (submit,
cancel, replay, finishing an attempt, closing a parent) writes its messages into the task
document's ``outbox`` *in the same single-document update* (``taskcore.taskdoc``), then
publishes them. The aggregator removes an entry when it folds the entry's event; the relay
re-publishes entries older than a few seconds. So a crash between the write and the
publish delays a message but never loses it, and no message is ever published for a write
that did not happen. Within an entry the dispatch (if any) is confirmed before the event,
so an event that reached the aggregator proves its dispatch was durable.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
from aio_pika.exceptions import AMQPError

from taskcore import metrics
from taskcore.adapters.rabbit import MessageReturned, Publisher, dumps, message
from taskcore.messages.envelope import Dispatch, OutboxEntry
from taskcore.taskdoc import ExecState, TaskDocuments, outbox_entries

log = logging.getLogger(__name__)


def amqp_message(dispatch: Dispatch) -> aio_pika.Message:
    """The AMQP message of a dispatch: its task message, headers and a stable id."""
    m = dispatch.message
    return message(
        dumps(m.model_dump(mode="json")),
        headers=dispatch.headers(),
        message_id=dispatch.message_id,
        correlation_id=m.task_id,
        priority=m.priority,
    )


async def publish_dispatch(publisher: Publisher, dispatch: Dispatch) -> None:
    await publisher.publish(dispatch.exchange, dispatch.key(), amqp_message(dispatch))


async def deliver(publisher: Publisher, entries: list[OutboxEntry]) -> None:
    """Publish entries: every dispatch confirmed first, then every event."""
    dispatches = [e.dispatch for e in entries if e.dispatch is not None]
    await asyncio.gather(*(publish_dispatch(publisher, d) for d in dispatches))
    await publisher.publish_events([e.event for e in entries])


async def deliver_or_defer(publisher: Publisher, entries: list[OutboxEntry]) -> bool:
    """Publish entries already written to an outbox; if the broker is unreachable right
    now, leave them to the relay instead of failing a step that is already durable.
    Returns whether they went out now."""
    try:
        await deliver(publisher, entries)
    except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
        log.warning(
            "Could not publish %d outbox entries now (%s); the relay will send them.",
            len(entries),
            exc.__class__.__name__,
        )
        return False
    return True


class OutboxRelay:
    """Re-publishes outbox entries that stayed unpublished (their writer crashed)."""

    def __init__(
        self, documents: TaskDocuments, publisher: Publisher, *, after_s: float, interval_s: float
    ) -> None:
        self._documents = documents
        self._publisher = publisher
        self._after_ms = int(after_s * 1000)
        self._interval_s = interval_s

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("The outbox relay failed a sweep; it will try again.")
            await asyncio.sleep(self._interval_s)

    async def sweep(self, limit: int = 500) -> int:
        """Re-publish stale entries once; returns how many entries were sent."""
        cutoff = self._documents.clock() - self._after_ms
        docs = await self._documents.stale_outboxes(cutoff, limit)
        drained = [d["_id"] for d in docs if not ExecState.of(d).outbox]
        await self._documents.forget_drained(drained, cutoff)
        sent = 0
        for doc in docs:
            entries = outbox_entries(doc)
            if not entries:
                continue
            # Every service runs a relay, and replicas run several: only the one whose
            # claim wins sends. A relay that dies between claim and send only delays the
            # entries by a period; a writer that added an entry meanwhile moved the clock,
            # and its own publish is under way.
            seen_at = ExecState.of(doc).outbox_at_ms or 0
            if not await self._documents.claim_stale_outbox(doc["_id"], seen_at):
                continue
            try:
                await deliver(self._publisher, entries)
            except MessageReturned:
                # Logged and counted by the publisher. The entry stays for the next period;
                # one unroutable task must not hold back the other documents of the sweep.
                continue
            sent += len(entries)
        if sent:
            metrics.OUTBOX_REPUBLISHED.inc(sent)
            log.warning("The outbox relay re-published %d stale messages.", sent)
        return sent
