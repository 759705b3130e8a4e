"""Parent tasks: counters derived from the children, and closing a parent once they settle.

Counters are a recount of the children's projections (one ``$group``), so every child
transition is counted exactly once, whatever was redelivered or replayed. Recounts are
debounced (``recounts.ParentRefresher``) and crash-safe through two numbers on the parent
document: the fold ``$inc``s ``subtasks_marked`` (and stamps ``subtasks_marked_ms``) for
every parent a batch touched *before* acking the batch; a recount that read mark ``m``
stores its counts with ``subtasks_counted: m`` only if no recount of a later mark got
there first, and clears the stamp only if no newer mark arrived meanwhile. A stamp that
stays is a recount lost with a crashed replica: the watchdog recounts it.

A parent whose own run has finished (``awaiting_children``) and whose children are all
terminal gets its final event through its outbox exactly once: the write is conditional
on ``children_settled`` not being set yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import SubtaskCounts, Task
from taskcore.messages.envelope import OutboxEntry
from taskcore.outbox import deliver_or_defer
from taskcore.taskdoc import WITHOUT_OUTBOX, ExecState

from taskcore_aggregator.parent_policy import DEFAULT_FAILURE_THRESHOLD, parent_outcome
from taskcore_aggregator.projection import state_of

log = logging.getLogger(__name__)

BUCKET = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.RETRYING: "queued",
    TaskStatus.RUNNING: "running",
    TaskStatus.COMPLETED: "completed",
    TaskStatus.COMPLETED_WITH_ERRORS: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.DEAD_LETTER: "dead_letter",
}


def count_statuses(statuses: Iterable[tuple[TaskStatus, int]]) -> SubtaskCounts:
    counts: dict[str, int] = {"total": 0}
    for status, n in statuses:
        field = BUCKET[status]
        counts[field] = counts.get(field, 0) + n
        counts["total"] += n
    return SubtaskCounts(**counts)


async def recount(store: Store, parent_id: str) -> SubtaskCounts:
    pipeline: list[Doc] = [
        {"$match": {"parent_task_id": parent_id}},
        {"$group": {"_id": "$status", "n": {"$sum": 1}}},
    ]
    rows = [
        (TaskStatus(r["_id"]), int(r["n"])) async for r in await store.tasks.aggregate(pipeline)
    ]
    return count_statuses(rows)


async def mark_for_recount(store: Store, parent_ids: Iterable[str]) -> None:
    """Record that these parents' counters may be stale (before the batch is acked)."""
    await store.documents.mark_for_recount(sorted(set(parent_ids)))


async def refresh_parent(store: Store, publisher: Publisher, parent_id: str) -> bool:
    """Recount one parent's children, store the counts, close it if it is done."""
    doc = await store.documents.get(parent_id, WITHOUT_OUTBOX)
    parent = state_of(doc)
    if doc is None or parent is None:
        return False
    counts = await recount(store, parent_id)
    changed = counts != parent.subtasks
    await store.documents.store_counts(
        parent_id, counts.model_dump(), ExecState.of(doc).subtasks_marked, changed
    )
    return await maybe_close(store, publisher, parent, doc, counts)


async def maybe_close(
    store: Store, publisher: Publisher, parent: Task, doc: Doc, counts: SubtaskCounts
) -> bool:
    if ExecState.of(doc).children_settled or not parent.awaiting_children or counts.open:
        return False
    if parent.status.is_terminal:
        return False
    entry = OutboxEntry(event=await _final_event(store, parent, doc, counts))
    # The counters it closed with, too: a recount that read the same mark a little
    # earlier may have stored older counts and made this one's store a no-op (the next
    # mark's recount would fix them, but a reader of the closed parent should not see
    # counts that disagree with its final event meanwhile).
    if not await store.documents.close_parent(parent.id, counts.model_dump(), entry):
        return False  # another replica (or the watchdog) closed it first
    await deliver_or_defer(publisher, [entry])
    log.info("Parent %s settled as %s.", parent.id, entry.event.type.value)
    return True


async def _final_event(store: Store, parent: Task, doc: Doc, counts: SubtaskCounts) -> TaskEvent:
    cancelled = ExecState.of(doc).cancel_requested or parent.cancel_requested
    threshold = DEFAULT_FAILURE_THRESHOLD
    if parent.subtask_policy == "threshold":
        threshold = await failure_threshold(store, parent.id)
    outcome = parent_outcome(
        parent.subtask_policy, counts, cancelled=cancelled, failure_threshold=threshold
    )
    data: dict[str, Any] = {"result": parent.result, "subtasks": counts.model_dump()}
    if outcome.error is not None:
        data["error"] = outcome.error
    if outcome.type is EventType.CANCELLED:
        data["reason"] = "cancel requested"
    return await store.documents.reserve_event(parent.id, outcome.type, data)


async def failure_threshold(store: Store, parent_id: str) -> float:
    """The threshold the parent was submitted with (its ``task.submitted`` data)."""
    submitted = await store.events.find_one({"task_id": parent_id, "sequence": 1}, {"data": 1})
    value = ((submitted or {}).get("data") or {}).get("failure_threshold")
    return float(value) if isinstance(value, int | float) else DEFAULT_FAILURE_THRESHOLD
