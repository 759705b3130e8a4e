"""The transactional outbox inside the task document.

Every step that changes a task's stored state and must then tell the broker (submit,
cancel, replay, finishing an attempt, closing a parent) writes its messages into the task
document's ``outbox`` map *in the same single-document update*, then publishes them.
The aggregator removes an entry when it folds the entry's event; the relay re-publishes
entries older than a few seconds. So a crash between the write and the publish delays a
message but never loses it, and no message is ever published for a write that did not
happen. Within an entry the dispatch (if any) is confirmed before the event, so an event
that reached the aggregator proves its dispatch was durable.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPError
from pydantic import BaseModel, ConfigDict

from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store, now_ms
from taskcore.adapters.rabbit import MessageReturned, Publisher, dumps, message
from taskcore.domain.events import TaskEvent
from taskcore.messages import envelope as env
from taskcore.messages.envelope import TaskMessage
from taskcore.messages.topology import TASKS_EXCHANGE, dispatch_routing_key

log = logging.getLogger(__name__)


class Dispatch(BaseModel):
    """A task message to publish, and where to."""

    model_config = ConfigDict(frozen=True)

    message: TaskMessage
    exchange: str = TASKS_EXCHANGE
    routing_key: str = ""
    traceparent: str | None = None
    extra_headers: dict[str, str | int] = {}

    def amqp_message(self) -> aio_pika.Message:
        m = self.message
        headers: dict[str, Any] = {
            env.HEADER_TASK_ID: m.task_id,
            env.HEADER_TASK_TYPE: m.task_type,
            env.HEADER_RETRY_COUNT: m.retry_count,
            env.HEADER_USER_ID: m.user_id,
            env.HEADER_DISPATCH: m.dispatch,
        }
        if self.traceparent:
            headers[env.HEADER_TRACEPARENT] = self.traceparent
        headers.update(self.extra_headers)
        return message(
            dumps(m.model_dump(mode="json")),
            headers=headers,
            message_id=f"{m.task_id}:{m.dispatch}",
            correlation_id=m.task_id,
            priority=m.priority,
        )

    def key(self) -> str:
        return self.routing_key or dispatch_routing_key(self.message.tier)


class OutboxEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    event: TaskEvent
    dispatch: Dispatch | None = None


def outbox_fields(entries: list[OutboxEntry]) -> Doc:
    """``$set`` fields that store entries in the outbox of one task document."""
    fields: Doc = {f"outbox.{e.event.event_id}": e.model_dump(mode="json") for e in entries}
    fields["outbox_at_ms"] = now_ms()
    return fields


def outbox_map(entries: list[OutboxEntry]) -> Doc:
    """The ``outbox`` and ``outbox_at_ms`` fields of a document being inserted."""
    return {
        "outbox": {e.event.event_id: e.model_dump(mode="json") for e in entries},
        "outbox_at_ms": now_ms(),
    }


def outbox_cleared(event_ids: list[str]) -> Doc:
    """``$unset`` fields that remove folded events' entries."""
    return {f"outbox.{event_id}": "" for event_id in event_ids}


async def deliver(publisher: Publisher, entries: list[OutboxEntry]) -> None:
    """Publish entries: every dispatch confirmed first, then every event."""
    dispatches = [e.dispatch for e in entries if e.dispatch is not None]
    await asyncio.gather(
        *(publisher.publish(d.exchange, d.key(), d.amqp_message()) for d in dispatches)
    )
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
        self, store: Store, publisher: Publisher, *, after_s: float, interval_s: float
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._after = timedelta(seconds=after_s)
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
        now = now_ms()
        cutoff = now - int(self._after.total_seconds() * 1000)
        docs = (
            await self._store.tasks.find(
                {"outbox_at_ms": {"$lt": cutoff}}, {"outbox": 1, "outbox_at_ms": 1}
            )
            .limit(limit)
            .to_list(None)
        )
        drained = [d["_id"] for d in docs if not d.get("outbox")]
        if drained:
            # A writer that adds an entry sets outbox_at_ms to now, which this excludes.
            await self._store.tasks.update_many(
                {"_id": {"$in": drained}, "outbox_at_ms": {"$lt": cutoff}},
                {"$unset": {"outbox_at_ms": ""}},
            )
        sent = 0
        for doc in docs:
            entries = [OutboxEntry.model_validate(e) for e in (doc.get("outbox") or {}).values()]
            if not entries or not await self._claim(doc["_id"], doc["outbox_at_ms"], now):
                continue
            entries.sort(key=lambda e: e.event.sequence)
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

    async def _claim(self, task_id: str, seen_at_ms: int, now: int) -> bool:
        """Move the entries' clock forward before sending them, only if no one else did.

        Every service runs a relay, and replicas run several: only the relay whose
        conditional update wins sends, so a stale entry goes out once per period rather
        than once per relay. A relay that dies between claim and send only delays the
        entries by one period; a writer that added an entry meanwhile moved the clock, and
        its own publish is under way.
        """
        claimed = await self._store.tasks.update_one(
            {"_id": task_id, "outbox_at_ms": seen_at_ms}, {"$set": {"outbox_at_ms": now}}
        )
        return claimed.matched_count == 1
