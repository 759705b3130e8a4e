"""Cancelling a task, exactly as docs/design.md ("Cancellation") lays it out, so the
API and the executor meet:

1. a task that is terminal in the projection: 409;
2. reserve a sequence, then cancel it if it is not running (a dispatch is outstanding
   and no lease is held): ``exec.done_no`` jumps past any dispatch, so it never runs,
   and ``task.cancelled`` goes out through the outbox;
3. otherwise it is running: set ``cancel_requested`` (event ``task.cancel_requested``)
   and signal every executor on ``control.cancel``; the task stops at its next
   ``check_cancelled()`` (the executor's heartbeat also reads the flag, so a lost signal
   costs one heartbeat at most);
4. a parent is marked ``cancel_requested`` and each of its open children is cancelled
   as above; the aggregator closes the parent once its children are terminal.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pymongo import ReturnDocument
from taskcore.adapters.mongo import Doc, doc_to_task, now_ms
from taskcore.adapters.rabbit import dumps, message
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.domain.status import OPEN_STATUSES
from taskcore.messages.topology import CANCEL_ROUTING_KEY, INTERNAL_EVENTS_EXCHANGE
from taskcore.outbox import OutboxEntry, deliver_or_defer, outbox_fields

from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError
from taskcore_api.handlers.access import VIEW_FIELDS, get_task, visible_task_doc
from taskcore_api.schemas import TaskView

# Above any dispatch number a task will ever get: every later dispatch is "already done".
NEVER_DISPATCH = 2**62
# Children cancelled concurrently, and how deep a tree of parents is followed.
CHILD_CONCURRENCY = 32
MAX_DEPTH = 16

_CANCEL_FIELDS = {**VIEW_FIELDS, "exec": 1}


async def cancel_task(deps: Deps, principal: Principal, task_id: str) -> TaskView:
    doc = await visible_task_doc(deps, principal, task_id, _CANCEL_FIELDS)
    if doc_to_task(doc).status.is_terminal:
        raise ApiError(
            409,
            "already_finished",
            f"The task is {doc['status']}; only an open task can be cancelled.",
            {"status": doc["status"]},
        )
    await request_cancel(deps, doc, principal.user_id)
    return await get_task(deps, principal, task_id)


async def request_cancel(deps: Deps, doc: Doc, requested_by: str, depth: int = 0) -> None:
    task_id = str(doc["_id"])
    data = {"reason": "cancelled on request", "requested_by": requested_by}
    if not await _is_parent(deps, doc):
        sequence = await _reserve_sequence(deps, task_id)
        if not await _cancel_unless_running(deps, task_id, sequence, data):
            await _request_stop(deps, task_id, sequence, data)
        return
    # A parent: never terminal before its children, so the aggregator closes it.
    await _request_stop(deps, task_id, await _reserve_sequence(deps, task_id), data)
    if depth < MAX_DEPTH:
        await _cancel_children(deps, task_id, requested_by, depth + 1)


async def _is_parent(deps: Deps, doc: Doc) -> bool:
    task = doc_to_task(doc)
    if task.awaiting_children or task.subtasks.total:
        return True
    child = await deps.store.tasks.find_one({"parent_task_id": task.id}, {"_id": 1})
    return child is not None


async def _reserve_sequence(deps: Deps, task_id: str) -> int:
    doc = await deps.store.tasks.find_one_and_update(
        {"_id": task_id}, {"$inc": {"seq": 1}}, {"seq": 1}, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        raise ApiError(404, "not_found", "No such task.")
    return int(doc["seq"])


def _entry(task_id: str, sequence: int, type_: EventType, data: dict[str, str]) -> OutboxEntry:
    event = TaskEvent(
        event_id=event_id_for(task_id, sequence),
        task_id=task_id,
        sequence=sequence,
        type=type_,
        occurred_at=datetime.now(UTC),
        data=data,
    )
    return OutboxEntry(event=event)


async def _cancel_unless_running(
    deps: Deps, task_id: str, sequence: int, data: dict[str, str]
) -> bool:
    """Close a task that is not running; False if it is running (or already closed)."""
    entry = _entry(task_id, sequence, EventType.CANCELLED, data)
    result = await deps.store.tasks.update_one(
        {"_id": task_id, "exec.open": True, "exec.lease_until": {"$lt": now_ms()}},
        {
            "$set": {
                "cancel_requested": True,
                "exec.open": False,
                "exec.done_no": NEVER_DISPATCH,
                **outbox_fields([entry]),
            }
        },
    )
    if result.matched_count != 1:
        return False
    await deliver_or_defer(deps.publisher, [entry])
    return True


async def _request_stop(deps: Deps, task_id: str, sequence: int, data: dict[str, str]) -> None:
    """Flag the task (once) and signal every executor to stop it."""
    entry = _entry(task_id, sequence, EventType.CANCEL_REQUESTED, data)
    result = await deps.store.tasks.update_one(
        {"_id": task_id, "cancel_requested": False},
        {"$set": {"cancel_requested": True, **outbox_fields([entry])}},
    )
    if result.matched_count == 1:
        await deliver_or_defer(deps.publisher, [entry])
    await deps.publisher.publish(
        INTERNAL_EVENTS_EXCHANGE,
        CANCEL_ROUTING_KEY,
        message(dumps({"task_id": task_id}), correlation_id=task_id),
    )


async def _cancel_children(deps: Deps, parent_id: str, requested_by: str, depth: int) -> None:
    open_children = deps.store.tasks.find(
        {"parent_task_id": parent_id, "status": {"$in": [s.value for s in OPEN_STATUSES]}},
        _CANCEL_FIELDS,
    )
    slots = asyncio.Semaphore(CHILD_CONCURRENCY)

    async def cancel_child(child: Doc) -> None:
        async with slots:
            await request_cancel(deps, child, requested_by, depth)

    await asyncio.gather(*[cancel_child(child) async for child in open_children])
