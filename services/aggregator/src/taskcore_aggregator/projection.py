"""The fold as the aggregator and ``taskcore rebuild`` both apply it, and what it writes.

One rule for both, so a rebuild equals the live projection: a task's projection is the
fold of its logged events in sequence order. The API inserts a task's document holding
exactly ``fold([submitted])``, so the fold of its submission changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from taskcore.adapters.mongo import Doc, Store, doc_to_event_dict, doc_to_task, projection_of
from taskcore.domain.events import TaskEvent
from taskcore.domain.evolve import evolve
from taskcore.domain.task import Task
from taskcore.domain.upcasting import upcast
from taskcore.messages.envelope import CommittedEvent

# The task fields each committed event hands to the bridge (see messages.cloudevents).
_HANDOFF_FIELDS = ("task_type", "user_id", "parent_task_id", "root_task_id", "labels", "team_id")


def state_of(doc: Doc | None) -> Task | None:
    """The projection a task document holds; None if it holds none."""
    if doc is None or "task_type" not in doc:
        return None
    return doc_to_task(doc)


def fold_from(
    state: Task | None, events: Iterable[TaskEvent], wanted: set[str] | None = None
) -> tuple[Task | None, list[CommittedEvent]]:
    """Fold ``events`` (sorted here) onto ``state``; a committed item per wanted event."""
    items: list[CommittedEvent] = []
    for event in sorted(events, key=lambda e: e.sequence):
        state = evolve(state, event)
        if state is not None and (wanted is None or event.event_id in wanted):
            items.append(committed_item(event, state))
    return state, items


def committed_item(event: TaskEvent, state: Task) -> CommittedEvent:
    task: dict[str, Any] = {f: getattr(state, f) for f in _HANDOFF_FIELDS}
    task.update(status=state.status.value, version=state.version)
    return CommittedEvent(event=event, task=task)


def projection_update(stored: Task | None, after: Task) -> Doc:
    """The fold-owned fields whose value changes: a ``$set`` as small as it can be."""
    new = {k: to_store_precision(v) for k, v in projection_of(after).items()}
    old = {k: to_store_precision(v) for k, v in (projection_of(stored) if stored else {}).items()}
    changed = {k: v for k, v in new.items() if k not in old or old[k] != v}
    if not after.cancel_requested:
        # The API and the executor set cancel_requested on the document ahead of the
        # task.cancel_requested event (claims check it), so a fold must never clear it.
        changed.pop("cancel_requested", None)
    return changed


def merged(logged: list[TaskEvent], ours: list[TaskEvent]) -> list[TaskEvent]:
    """The log as read, plus the events we just appended (so a read can never miss them)."""
    return list({e.event_id: e for e in [*logged, *ours]}.values())


def to_store_precision(value: Any) -> Any:
    """Datetimes at the millisecond precision the store keeps, so compares are exact."""
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


def at_store_precision(event: TaskEvent) -> TaskEvent:
    """The event with its time as the log will hold it (milliseconds)."""
    at = event.occurred_at
    if at.microsecond % 1000 == 0:
        return event
    return event.model_copy(update={"occurred_at": to_store_precision(at)})


async def load_logs(store: Store, task_ids: Iterable[str]) -> dict[str, list[TaskEvent]]:
    """The logged events of several tasks, upcast, each task's in sequence order."""
    ids = list(task_ids)
    logs: dict[str, list[TaskEvent]] = defaultdict(list)
    if not ids:
        return logs
    cursor = store.events.find({"task_id": {"$in": ids}}).sort([("task_id", 1), ("sequence", 1)])
    async for doc in cursor:
        logs[doc["task_id"]].append(event_from_doc(doc))
    return logs


def event_from_doc(doc: Doc) -> TaskEvent:
    """A logged event at the current schema version (old versions are upcast on read)."""
    return TaskEvent.model_validate(upcast(doc_to_event_dict(doc)))
