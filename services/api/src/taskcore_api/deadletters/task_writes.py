"""Writing to a task on a dead letter's behalf: an event at a reserved sequence, and
the outbox entry's delivery."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.outbox import OutboxEntry, deliver_or_defer
from taskcore.registry import TaskTypeRegistry

from taskcore_api.deadletters.results import DeadLetterNotFound

log = logging.getLogger(__name__)


async def reserve_event(
    store: Store, task_id: str, type_: EventType, data: dict[str, Any]
) -> TaskEvent:
    """An event at a freshly reserved sequence of the task (an unused one leaves a gap,
    which the fold allows)."""
    doc = await store.tasks.find_one_and_update(
        {"_id": task_id}, {"$inc": {"seq": 1}}, {"seq": 1}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        raise DeadLetterNotFound(task_id)
    sequence = int(doc["seq"])
    return TaskEvent(
        event_id=event_id_for(task_id, sequence),
        task_id=task_id,
        sequence=sequence,
        type=type_,
        occurred_at=datetime.now(UTC),
        data=data,
    )


async def deliver_committed(publisher: Publisher, entry: OutboxEntry) -> None:
    """Publish an entry already committed to a task's outbox; if that fails the outbox
    relay re-sends it, so the action stands."""
    try:
        await deliver_or_defer(publisher, [entry])
    except Exception:
        log.warning("Publishing %s failed; the outbox relay will re-send it.", entry.event.type)


def type_label(registry: TaskTypeRegistry, record: Doc) -> str:
    """A bounded metric label: registered type names only."""
    task_type = record.get("task_type")
    return str(task_type) if task_type in registry else "unregistered"
