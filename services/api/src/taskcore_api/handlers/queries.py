"""Listing tasks and a task's event log, with cursor pagination.

Tasks are listed newest first, ordered by ``(created_at, _id)``, and a cursor holds the
last pair a page returned. New tasks sort before any cursor, so a listing walked page by
page returns every task that existed when it began exactly once, however many tasks are
inserted meanwhile.

The store query uses inclusive time bounds, and the exact bounds and the cursor are
applied here. The reason is the nx-27017 stand-in: it sorts datetimes to the millisecond
but compares them only to the second (``$lt`` of 12:00:00.500 misses 12:00:00.100), so an
inclusive bound is the one that is a superset on it and on MongoDB alike. What is read and
dropped is at most the tasks created in the same second (on MongoDB, the same ms).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.cursor import AsyncCursor
from taskcore.adapters.mongo import Doc, doc_to_event_dict
from taskcore.domain.clock import as_utc, to_ms
from taskcore.domain.events import TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore.domain.upcasting import upcast

from taskcore_api.auth import Principal
from taskcore_api.cursors import decode_cursor, encode_cursor
from taskcore_api.deps import Deps
from taskcore_api.handlers.access import VIEW_FIELDS, view_of, visible_task_doc
from taskcore_api.schemas import EventList, EventView, TaskList

NEWEST_FIRST = [("created_at", -1), ("_id", -1)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TaskFilters:
    status: list[TaskStatus] | None = None
    task_type: str | None = None
    parent_task_id: str | None = None
    created_after: datetime | None = None  # exclusive
    created_before: datetime | None = None  # exclusive
    user_id: str | None = None  # admins only


def _sort_key(doc: Doc) -> tuple[int, str]:
    return to_ms(doc["created_at"]), str(doc["_id"])


def _query(
    principal: Principal, f: TaskFilters, lower: datetime | None, upper: datetime | None
) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if not principal.is_admin:
        query["user_id"] = principal.user_id
    elif f.user_id:
        query["user_id"] = f.user_id
    if f.status:
        query["status"] = {"$in": [s.value for s in f.status]}
    if f.task_type:
        query["task_type"] = f.task_type
    if f.parent_task_id:
        query["parent_task_id"] = f.parent_task_id
    created: dict[str, datetime] = {}
    if lower is not None:
        created["$gte"] = lower
    if upper is not None:
        created["$lte"] = upper
    if created:
        query["created_at"] = created
    return query


async def list_tasks(
    deps: Deps, principal: Principal, filters: TaskFilters, limit: int, cursor: str | None
) -> TaskList:
    after: tuple[int, str] | None = None
    if cursor:
        position = decode_cursor(cursor, {"t": int, "i": str})
        after = (position["t"], position["i"])
    window = _Window(
        lower=as_utc(filters.created_after) if filters.created_after else None,
        before=as_utc(filters.created_before) if filters.created_before else None,
        after=after,
    )
    found = deps.store.tasks.find(
        _query(principal, filters, window.lower, window.upper), VIEW_FIELDS
    ).sort(NEWEST_FIRST)
    page = await window.take(found.batch_size(limit + 1), limit + 1)
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        t, i = _sort_key(page[-1])
        next_cursor = encode_cursor({"t": t, "i": i})
    return TaskList(items=[view_of(d) for d in page], next_cursor=next_cursor)


@dataclass(frozen=True)
class _Window:
    """The exact bounds of a page: created after ``lower`` and before ``before`` (both
    exclusive), and sorting after the cursor position ``after``."""

    lower: datetime | None
    before: datetime | None
    after: tuple[int, str] | None

    @property
    def upper(self) -> datetime | None:
        """An inclusive upper bound for the store query (a superset, see above)."""
        bounds = [self.before, from_ms(self.after[0]) if self.after else None]
        return min((b for b in bounds if b is not None), default=None)

    async def take(self, docs: AsyncCursor[Doc], count: int) -> list[Doc]:
        """Up to ``count`` documents inside the window, from a newest-first cursor."""
        taken: list[Doc] = []
        async for doc in docs:
            created_at = as_utc(doc["created_at"])
            if self.lower is not None and created_at <= self.lower:
                break  # newest first: everything after this is older still
            if (self.before is not None and created_at >= self.before) or (
                self.after is not None and _sort_key(doc) >= self.after
            ):
                continue  # on an earlier page, or in the same second as a bound
            taken.append(doc)
            if len(taken) == count:
                break
        return taken


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


async def list_events(
    deps: Deps, principal: Principal, task_id: str, limit: int, cursor: str | None
) -> EventList:
    await visible_task_doc(deps, principal, task_id, {"user_id": 1, "task_type": 1})
    after = decode_cursor(cursor, {"s": int})["s"] if cursor else 0
    events = await load_events(deps, task_id, after_sequence=after, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    next_cursor = encode_cursor({"s": events[-1].sequence}) if more else None
    return EventList(items=[EventView.of(e) for e in events], next_cursor=next_cursor)


async def load_events(
    deps: Deps, task_id: str, *, after_sequence: int = 0, limit: int | None = None
) -> list[TaskEvent]:
    """The task's logged events after a sequence, upcast, in sequence order."""
    found = deps.store.events.find({"task_id": task_id, "sequence": {"$gt": after_sequence}})
    found = found.sort("sequence", 1)
    if limit is not None:
        found = found.limit(limit)
    return [TaskEvent.model_validate(upcast(doc_to_event_dict(d))) async for d in found]
