"""Cancelling tasks from the executor, by the protocol of docs/design.md, "Cancellation".

The executor cancels on its own in two cases: a child of a ``fail_fast`` parent failed
(its open siblings are cancelled), and a parent was cancelled while its run was still
creating children (its open children are cancelled). Each task is cancelled with
single-document conditional updates, so racing a finishing executor or the API is safe:

1. not running (a dispatch is outstanding and no lease is held): close it at once with
   ``task.cancelled`` and make every later dispatch of it "already done";
2. running: set ``cancel_requested`` (``task.cancel_requested``) and signal every
   executor on ``control.cancel``; the holder stops at its next checkpoint;
3. a parent waiting for its children: set ``cancel_requested`` and cancel its open
   children in turn (the aggregator closes the parent once they are terminal).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from enum import StrEnum

from taskcore.adapters.mongo import Doc, Store, now_ms
from taskcore.adapters.rabbit import Publisher, message
from taskcore.domain.events import EventType
from taskcore.domain.status import OPEN_STATUSES
from taskcore.messages.topology import CANCEL_ROUTING_KEY, INTERNAL_EVENTS_EXCHANGE
from taskcore.outbox import OutboxEntry, deliver_or_defer, outbox_fields

from taskcore_executor.claims import reserve_sequences
from taskcore_executor.outcomes import Sequencer

log = logging.getLogger(__name__)

# A cancelled task's ``exec.done_no``: above any dispatch number it will ever get.
CANCELLED_DONE_NO = 2**62
MAX_DEPTH = 8  # parents of parents of ...: a bound against a malformed tree
CANCEL_CHUNK = 50  # children cancelled concurrently, so a wide fan-out stops quickly


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # closed before it ran
    SIGNALLED = "signalled"  # running: asked to stop at its next checkpoint
    CASCADED = "cascaded"  # a parent: its open children were cancelled
    CLOSED = "closed"  # already finished (or already being cancelled): nothing to do


async def signal_cancel(publisher: Publisher, task_id: str) -> None:
    body = json.dumps({"task_id": task_id}).encode()
    await publisher.publish(INTERNAL_EVENTS_EXCHANGE, CANCEL_ROUTING_KEY, message(body))


async def cancel_task(
    store: Store, publisher: Publisher, task_id: str, reason: str, depth: int = 0
) -> CancelResult:
    first = await reserve_sequences(store, task_id, 1)
    event = Sequencer(task_id, first, first)
    cancelled = OutboxEntry(event=event.event(EventType.CANCELLED, {"reason": reason}))
    closed = await store.tasks.update_one(
        {"_id": task_id, "exec.open": True, "exec.lease_until": {"$lt": now_ms()}},
        {
            "$set": {
                "cancel_requested": True,
                "exec.open": False,
                "exec.done_no": CANCELLED_DONE_NO,
                **outbox_fields([cancelled]),
            }
        },
    )
    if closed.matched_count:
        await deliver_or_defer(publisher, [cancelled])
        return CancelResult.CANCELLED
    requested = OutboxEntry(
        event=Sequencer(task_id, first, first).event(EventType.CANCEL_REQUESTED, {"reason": reason})
    )
    doc = await store.tasks.find_one_and_update(
        {"_id": task_id, "cancel_requested": False, "status": {"$in": list(OPEN_STATUSES)}},
        {"$set": {"cancel_requested": True, **outbox_fields([requested])}},
        {"exec": 1},  # not "exec.open": the stand-in flattens dotted projections
    )
    if doc is None:
        return CancelResult.CLOSED
    await deliver_or_defer(publisher, [requested])
    if (doc.get("exec") or {}).get("open"):
        await signal_cancel(publisher, task_id)
        return CancelResult.SIGNALLED
    # Its run is over: either a parent waiting for its children (cancel them; its
    # awaiting_children may not be folded yet, so look for children either way), or a
    # task whose outcome is recorded but not yet folded (it has no children).
    if depth < MAX_DEPTH and await cancel_open_children(
        store, publisher, task_id, reason, depth=depth + 1
    ):
        return CancelResult.CASCADED
    return CancelResult.CLOSED


async def cancel_open_children(
    store: Store,
    publisher: Publisher,
    parent_id: str,
    reason: str,
    *,
    exclude: str | None = None,
    depth: int = 0,
) -> int:
    """Cancel every child of ``parent_id`` still open; returns how many were acted on."""
    query: Doc = {"parent_task_id": parent_id, "status": {"$in": list(OPEN_STATUSES)}}
    if exclude is not None:
        query["_id"] = {"$ne": exclude}
    ids = [d["_id"] async for d in store.tasks.find(query, {"_id": 1})]
    acted = 0
    for start in range(0, len(ids), CANCEL_CHUNK):
        results = await asyncio.gather(
            *(
                cancel_task(store, publisher, child_id, reason, depth)
                for child_id in ids[start : start + CANCEL_CHUNK]
            )
        )
        acted += sum(1 for r in results if r is not CancelResult.CLOSED)
    return acted


async def fail_fast(store: Store, publisher: Publisher, parent_id: str, failed_child: str) -> int:
    """A child failed: if its parent's policy is ``fail_fast``, cancel its open siblings."""
    parent = await store.tasks.find_one({"_id": parent_id}, {"subtask_policy": 1})
    if parent is None or parent.get("subtask_policy") != "fail_fast":
        return 0
    reason = f"sibling {failed_child} failed (fail_fast)"
    acted = await cancel_open_children(store, publisher, parent_id, reason, exclude=failed_child)
    if acted:
        log.info("Cancelled %d open siblings of failed child %s.", acted, failed_child)
    return acted


class RecentSignals:
    """Cancel signals for tasks this executor was not running when they arrived.

    A signal can land while the claim of that very task is in flight; remembering it for a
    little while lets the task be cancelled as soon as it is registered, instead of at the
    next heartbeat.
    """

    def __init__(self, keep_s: float = 30.0) -> None:
        self._keep_s = keep_s
        self._seen: dict[str, float] = {}

    def remember(self, task_id: str) -> None:
        now = time.monotonic()
        self._seen = {t: at for t, at in self._seen.items() if now - at < self._keep_s}
        self._seen[task_id] = now

    def __contains__(self, task_id: object) -> bool:
        at = self._seen.get(str(task_id))
        return at is not None and time.monotonic() - at < self._keep_s
