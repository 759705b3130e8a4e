"""Writing to a task on a dead letter's behalf: an event at a reserved sequence, and
the outbox entry's delivery."""

from __future__ import annotations

import logging
from typing import Any

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType, TaskEvent
from taskcore.messages.envelope import OutboxEntry
from taskcore.outbox import deliver_or_defer
from taskcore.registry import TaskTypeRegistry

from taskcore_api.deadletters.results import DeadLetterNotFound

log = logging.getLogger(__name__)


async def reserve_event(
    store: Store, task_id: str, type_: EventType, data: dict[str, Any]
) -> TaskEvent:
    """An event at a freshly reserved sequence of the task, or ``DeadLetterNotFound``."""
    try:
        return await store.documents.reserve_event(task_id, type_, data)
    except KeyError:
        raise DeadLetterNotFound(task_id) from None


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
