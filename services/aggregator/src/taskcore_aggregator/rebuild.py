"""Recomputing projections from the event log, as ``taskcore rebuild`` does.

The same fold as the live aggregator (``projection``), a chunk of tasks at a time in
task-id order, so memory stays flat however long the log. Only fold-owned fields are
written (``exec``, ``outbox``, ``seq`` and the other bookkeeping fields are left alone).
As in the live fold, each write is conditional on the document's ``fold_rev`` as read,
and the log is read after the document, so a rebuild can run beside live aggregators.
Parents' counters are recounted afterwards. With ``check`` nothing is written: the
report lists what differs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from taskcore.adapters.mongo import Doc, Store, task_to_doc
from taskcore.domain.events import TaskEvent
from taskcore.domain.task import SubtaskCounts, Task
from taskcore.taskdoc import operations
from taskcore.workflows.plan import WORKFLOW_TASK_TYPE

from taskcore_aggregator.parents import recount
from taskcore_aggregator.projection import (
    fold_from,
    load_logs,
    projection_update,
    state_of,
)
from taskcore_aggregator.workflow_runtime import derived_view

MAX_ATTEMPTS = 5


@dataclass
class RebuildReport:
    tasks: int = 0
    events: int = 0
    differing: list[str] = field(default_factory=list)  # projections that were not the fold
    created: list[str] = field(default_factory=list)  # logged tasks with no document
    parents: int = 0
    # Parents whose derived fields (counters, a workflow's view) differed.
    counters_differing: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.differing or self.created or self.counters_differing)

    def summary(self, check: bool) -> str:
        verb = "differ from" if check else "were rewritten from"
        return (
            f"{self.tasks} tasks and {self.events} events read; {len(self.differing)} "
            f"projections {verb} the log, {len(self.created)} missing; "
            f"{self.parents} parents recounted, {len(self.counters_differing)} with "
            "different counters."
        )


async def rebuild(
    store: Store, *, task_ids: Sequence[str] | None = None, check: bool = False, chunk: int = 500
) -> RebuildReport:
    report = RebuildReport()
    parents: set[str] = set(task_ids or ())
    async for ids in _logged_tasks(store, task_ids, chunk):
        for task in await _rebuild_chunk(store, ids, check, report):
            if task.parent_task_id:
                parents.add(task.parent_task_id)
    await _recount_parents(store, parents, check, report)
    return report


async def _logged_tasks(
    store: Store, task_ids: Sequence[str] | None, chunk: int
) -> AsyncIterator[list[str]]:
    """The ids of the tasks in the log, a chunk at a time, in order."""
    query: Doc = {"task_id": {"$in": list(task_ids)}} if task_ids else {}
    cursor = store.events.find(query, {"task_id": 1}).sort([("task_id", 1), ("sequence", 1)])
    ids: list[str] = []
    async for doc in cursor.batch_size(5000):
        if ids and ids[-1] == doc["task_id"]:
            continue
        if len(ids) >= chunk:
            yield ids
            ids = []
        ids.append(doc["task_id"])
    if ids:
        yield ids


async def _rebuild_chunk(
    store: Store, task_ids: list[str], check: bool, report: RebuildReport
) -> list[Task]:
    # The documents first, then the log: the log read then holds every event they reflect.
    docs = await store.documents.get_many(task_ids)
    logs = await load_logs(store, task_ids)
    report.tasks += len(task_ids)
    report.events += sum(len(events) for events in logs.values())
    rebuilt: list[Task] = []
    for task_id in task_ids:
        doc, events = docs.get(task_id), logs[task_id]
        task = await _rebuild_task(store, doc, task_id, events, check, report)
        if task is not None:
            rebuilt.append(task)
    return rebuilt


async def _rebuild_task(
    store: Store,
    doc: Doc | None,
    task_id: str,
    events: list[TaskEvent],
    check: bool,
    report: RebuildReport,
) -> Task | None:
    for _ in range(MAX_ATTEMPTS):
        stored = state_of(doc)
        after, _items = fold_from(None, events)
        if after is None:
            return None  # nothing submitted in the log: leave the document alone
        if doc is None:
            report.created.append(task_id)
            if not check:
                await store.documents.insert_new([_new_document(after)])  # (a repeat: none)
            return after
        changes = projection_update(stored, after)
        if not changes:
            return after
        if check:
            report.differing.append(task_id)
            return after
        if await store.documents.apply(operations.write_projection(doc, changes, [])):
            report.differing.append(task_id)
            return after
        # A live fold wrote meanwhile: read the document again, then the log.
        doc = await store.documents.get(task_id)
        events = (await load_logs(store, [task_id]))[task_id]
    raise RuntimeError(f"task {task_id} kept changing under the rebuild")


def _new_document(task: Task) -> Doc:
    """A document for a logged task that has none (restoring from the log alone)."""
    return operations.restored_document(
        task_to_doc(task), version=task.version, terminal=task.status.is_terminal
    )


async def _recount_parents(
    store: Store, candidates: set[str], check: bool, report: RebuildReport
) -> None:
    for parent_id in sorted(candidates):
        counts = await recount(store, parent_id)
        doc = await store.documents.get(parent_id)
        if doc is None or (counts.total == 0 and not doc.get("subtasks")):
            continue
        report.parents += 1
        derived: Doc = {}
        if SubtaskCounts.model_validate(doc.get("subtasks") or {}) != counts:
            derived["subtasks"] = counts.model_dump()
        task = state_of(doc)
        if task is not None and task.task_type == WORKFLOW_TASK_TYPE:
            shown = await derived_view(store, task, doc)
            if shown != doc.get("workflow"):
                derived["workflow"] = shown
        if not derived:
            continue
        report.counters_differing.append(parent_id)
        if not check:
            await store.tasks.update_one({"_id": parent_id}, {"$set": derived})
