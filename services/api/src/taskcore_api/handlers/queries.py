"""Listing tasks and a task's event log, with cursor pagination.

Tasks are listed newest first by ``list_key`` (``<created ms>:<id>``, see
``taskcore.listing``), and a cursor holds the last key a page returned: new tasks sort
before any cursor, so a listing walked page by page returns every task that existed when
it began exactly once, however many are inserted meanwhile.

A caller's scope is a union (their own tasks, each of their teams' tasks): each part is
its own query on its own index (``user_id``/``team_id`` with ``list_key``), limited to
the page size, and the parts are merged here by key. That is what MongoDB's planner does
with an ``$or`` at best; the nx-27017 stand-in scans the whole collection for an ``$or``
but serves each part from its index (``tests/integration/api/test_listing_indexes.py``
checks the plans).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime

from pymongo import DESCENDING, IndexModel, UpdateOne
from taskcore.adapters.mongo import Doc, Store, doc_to_event_dict
from taskcore.domain.events import TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore.domain.upcasting import upcast
from taskcore.listing import KEY_DIGITS, epoch_ms, index_fields, time_bound

from taskcore_api import authz
from taskcore_api.auth import Principal
from taskcore_api.cursors import decode_cursor, encode_cursor
from taskcore_api.deps import Deps
from taskcore_api.handlers.access import ACCESS_FIELDS, VIEW_FIELDS, view_for, visible_task_doc
from taskcore_api.schemas import EventList, EventView, TaskList

NEWEST_FIRST = [("list_key", DESCENDING)]
# Above every list key (they start with digits).
TOP = "~"
MAX_SEQUENCE = 2**62
_LIST_FIELDS = {**VIEW_FIELDS, "list_key": 1}


@dataclass(frozen=True)
class TaskFilters:
    status: list[TaskStatus] | None = None
    task_type: str | None = None
    parent_task_id: str | None = None
    created_after: datetime | None = None  # exclusive
    created_before: datetime | None = None  # exclusive
    user_id: str | None = None  # admins only
    team_id: str | None = None
    label_terms: list[str] = field(default_factory=list)  # "k:v", all must match


async def ensure_listing_indexes(store: Store) -> None:
    """The indexes listing relies on (``_id`` cannot be in a compound index on the
    stand-in, hence the one ``list_key``)."""
    await store.tasks.create_indexes(
        [
            IndexModel([("list_key", DESCENDING)]),
            IndexModel([("user_id", 1), ("list_key", DESCENDING)]),
            IndexModel([("team_id", 1), ("list_key", DESCENDING)]),
            IndexModel([("label_terms", 1), ("list_key", DESCENDING)]),
            IndexModel([("parent_task_id", 1), ("list_key", DESCENDING)]),
        ]
    )
    await _backfill_index_fields(store)


async def _backfill_index_fields(store: Store, batch: int = 500) -> None:
    """Tasks stored before ``list_key`` existed get it (once; later starts find none)."""
    missing = store.tasks.find(
        {"list_key": {"$exists": False}, "created_at": {"$exists": True}},
        {"created_at": 1, "labels": 1},
    )
    updates: list[UpdateOne] = []
    async for doc in missing:
        fields = index_fields(doc["_id"], doc["created_at"], doc.get("labels") or {})
        updates.append(UpdateOne({"_id": doc["_id"]}, {"$set": fields}))
        if len(updates) == batch:
            await store.tasks.bulk_write(updates, ordered=False)
            updates = []
    if updates:
        await store.tasks.bulk_write(updates, ordered=False)


def _key_range(f: TaskFilters, cursor_key: str | None) -> dict[str, str]:
    """``list_key`` bounds: below the cursor, and inside the exclusive created bounds."""
    upper = cursor_key or TOP
    if f.created_before is not None:
        # created_at < T  <=>  created ms < T in ms, rounded up (the store keeps ms)
        sub_ms = f.created_before.microsecond % 1000 != 0
        before_ms = epoch_ms(f.created_before) + int(sub_ms)
        upper = min(upper, time_bound(before_ms))
    bounds = {"$lt": upper}
    if f.created_after is not None:
        # created_at > T  <=>  created ms > floor(T in ms)
        bounds["$gte"] = time_bound(epoch_ms(f.created_after) + 1)
    return bounds


def _filters(f: TaskFilters) -> Doc:
    query: Doc = {}
    if f.status:
        query["status"] = {"$in": [s.value for s in f.status]}
    if f.task_type:
        query["task_type"] = f.task_type
    if f.parent_task_id:
        query["parent_task_id"] = f.parent_task_id
    terms = f.label_terms
    if len(terms) == 1:
        query["label_terms"] = terms[0]
    elif terms:
        query["label_terms"] = {"$all": terms}
    return query


def listing_queries(principal: Principal, f: TaskFilters, cursor_key: str | None) -> list[Doc]:
    """One store query per part of the caller's scope (their union is the listing)."""
    scopes = authz.listing_scopes(principal, team_id=f.team_id, user_id=f.user_id)
    common = {**_filters(f), "list_key": _key_range(f, cursor_key)}
    return [{**scope, **common} for scope in scopes]


async def list_tasks(
    deps: Deps, principal: Principal, filters: TaskFilters, limit: int, cursor: str | None
) -> TaskList:
    cursor_key = _decode_list_cursor(cursor) if cursor else None
    queries = listing_queries(principal, filters, cursor_key)
    parts = [
        await deps.store.tasks.find(q, _LIST_FIELDS)
        .sort(NEWEST_FIRST)
        .limit(limit + 1)
        .to_list(None)
        for q in queries
    ]
    page = _merge(parts, limit + 1)
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        next_cursor = encode_cursor({"k": page[-1]["list_key"]})
    return TaskList(items=[view_for(principal, d) for d in page], next_cursor=next_cursor)


def _merge(parts: list[list[Doc]], count: int) -> list[Doc]:
    """The first ``count`` distinct documents of newest-first lists, newest first."""
    merged: list[Doc] = []
    seen: set[str] = set()
    for doc in heapq.merge(*parts, key=lambda d: str(d["list_key"]), reverse=True):
        if doc["_id"] not in seen:
            seen.add(doc["_id"])
            merged.append(doc)
            if len(merged) == count:
                break
    return merged


def _decode_list_cursor(cursor: str) -> str:
    key = str(decode_cursor(cursor, {"k": str})["k"])
    if not (KEY_DIGITS < len(key) <= KEY_DIGITS + 201 and key[:KEY_DIGITS].isdigit()):
        decode_cursor("", {"k": str})  # the same 422 as any cursor that is not ours
    return key


async def list_events(
    deps: Deps, principal: Principal, task_id: str, limit: int, cursor: str | None
) -> EventList:
    await visible_task_doc(deps, principal, task_id, ACCESS_FIELDS)
    after = _decode_event_cursor(cursor) if cursor else 0
    events = await load_events(deps, task_id, after_sequence=after, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    next_cursor = encode_cursor({"s": events[-1].sequence}) if more else None
    items = [authz.shown_event(principal, EventView.of(e)) for e in events]
    return EventList(items=items, next_cursor=next_cursor)


def _decode_event_cursor(cursor: str) -> int:
    after = int(decode_cursor(cursor, {"s": int})["s"])
    if not 0 <= after < MAX_SEQUENCE:
        decode_cursor("", {"s": int})  # the same 422 as any cursor that is not ours
    return after


async def load_events(
    deps: Deps, task_id: str, *, after_sequence: int = 0, limit: int | None = None
) -> list[TaskEvent]:
    """The task's logged events after a sequence, upcast, in sequence order."""
    found = deps.store.events.find({"task_id": task_id, "sequence": {"$gt": after_sequence}})
    found = found.sort("sequence", 1)
    if limit is not None:
        found = found.limit(limit)
    return [TaskEvent.model_validate(upcast(doc_to_event_dict(d))) async for d in found]
