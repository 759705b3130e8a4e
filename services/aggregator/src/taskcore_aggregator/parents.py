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
from typing import Any, Protocol

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import SubtaskCounts, Task
from taskcore.messages.envelope import OutboxEntry
from taskcore.outbox import deliver_or_defer
from taskcore.taskdoc import ExecState
from taskcore.workflows.plan import WORKFLOW_TASK_TYPE
from taskcore.workflows.tree import FOR_EACH_TASK_TYPE

from taskcore_aggregator.parent_policy import (
    DEFAULT_FAILURE_THRESHOLD,
    ParentOutcome,
    parent_outcome,
)
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


async def refresh_parent(
    store: Store, publisher: Publisher, parent_id: str, workflows: WorkflowAdvancer | None = None
) -> bool:
    """Recount one parent's children, store the counts, and close it if it is done (a
    workflow: advance it, which closes it once its state machine says so)."""
    doc = await store.documents.get(parent_id)
    parent = state_of(doc)
    if doc is None or parent is None:
        return False
    counts = await recount(store, parent_id)
    changed = counts != parent.subtasks
    await store.documents.store_counts(
        parent_id, counts.model_dump(), ExecState.of(doc).subtasks_marked, changed
    )
    if workflows is not None and parent.task_type == WORKFLOW_TASK_TYPE:
        return await workflows.advance(parent, doc, counts)
    if workflows is not None and parent.task_type == FOR_EACH_TASK_TYPE:
        return await workflows.close_for_each(parent, doc, counts)
    return await maybe_close(store, publisher, parent, doc, counts)


class WorkflowAdvancer(Protocol):
    async def advance(self, workflow: Task, doc: Doc, counts: SubtaskCounts) -> bool:
        """Carry the workflow forward; whether this closed it."""

    async def close_for_each(self, container: Task, doc: Doc, counts: SubtaskCounts) -> bool:
        """Close a for_each step's container once its elements have ended."""


def ready_to_close(parent: Task, doc: Doc, counts: SubtaskCounts) -> bool:
    """A parent closes once its own run has ended and every child is terminal, once."""
    if ExecState.of(doc).children_settled or parent.status.is_terminal:
        return False
    return parent.awaiting_children and not counts.open


async def maybe_close(
    store: Store, publisher: Publisher, parent: Task, doc: Doc, counts: SubtaskCounts
) -> bool:
    """Close a parent by its policy once it is ready."""
    if not ready_to_close(parent, doc, counts):
        return False
    outcome = await outcome_of(store, parent, doc, counts)
    data: dict[str, Any] = {"result": parent.result}
    if outcome.error is not None:
        data["error"] = outcome.error
    if outcome.type is EventType.CANCELLED:
        data["reason"] = "cancel requested"
    return await close(store, publisher, parent, counts, outcome.type, data)


async def outcome_of(store: Store, parent: Task, doc: Doc, counts: SubtaskCounts) -> ParentOutcome:
    """How a parent ends by its policy, now that no child is open."""
    cancelled = ExecState.of(doc).cancel_requested or parent.cancel_requested
    threshold = DEFAULT_FAILURE_THRESHOLD
    if parent.subtask_policy == "threshold":
        threshold = await failure_threshold(store, parent.id)
    return parent_outcome(
        parent.subtask_policy, counts, cancelled=cancelled, failure_threshold=threshold
    )


async def close(
    store: Store,
    publisher: Publisher,
    parent: Task,
    counts: SubtaskCounts,
    type_: EventType,
    data: dict[str, Any],
) -> bool:
    """Write a parent's final event, once (another replica or the watchdog may race)."""
    data = {**data, "subtasks": counts.model_dump()}
    entry = OutboxEntry(event=await store.documents.reserve_event(parent.id, type_, data))
    # The counters it closed with, too: a recount that read the same mark a little
    # earlier may have stored older counts and made this one's store a no-op (the next
    # mark's recount would fix them, but a reader of the closed parent should not see
    # counts that disagree with its final event meanwhile).
    if not await store.documents.close_parent(parent.id, counts.model_dump(), entry):
        return False
    await deliver_or_defer(publisher, [entry])
    log.info("Parent %s settled as %s.", parent.id, type_.value)
    return True


async def failure_threshold(store: Store, parent_id: str) -> float:
    """The threshold the parent was submitted with (its ``task.submitted`` data)."""
    submitted = await store.events.find_one({"task_id": parent_id, "sequence": 1}, {"data": 1})
    value = ((submitted or {}).get("data") or {}).get("failure_threshold")
    return float(value) if isinstance(value, int | float) else DEFAULT_FAILURE_THRESHOLD
