"""Appending events to the log exactly once and folding them into projections.

No multi-document transactions: the log's unique keys (``event_id``, and
``(task_id, sequence)``) make appends idempotent, and each projection write is
conditional on the document's ``fold_rev`` (a write counter) being what the fold read,
so a crash between append and projection heals on redelivery and replicas never
overwrite each other. A re-fold reads the document first and the log second: the log it
folds then holds every event the document already reflected, so no write ever drops an
event another one committed.

The rule (README, "Sequences and ordering"): a projection is always the fold of its
task's logged events in sequence order. New events above the projection's ``version``
are applied incrementally; a duplicate or a late event (at or below ``version``) makes
the task re-fold from the log. A gap is never waited for and never skipped: whatever
arrives later re-folds into place, and a terminal state absorbs everything but a replay.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.errors import BulkWriteError
from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store, event_to_doc
from taskcore.domain.events import TaskEvent, event_id_for
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import Task
from taskcore.messages.envelope import CommittedEvent
from taskcore.taskdoc import ExecState, Op
from taskcore.taskdoc.operations import outbox_entry, write_projection
from taskcore.tracing import start_span

from taskcore_aggregator.projection import (
    at_store_precision,
    fold_from,
    load_logs,
    merged,
    projection_update,
    seed_of,
    state_of,
)
from taskcore_aggregator.retention import Retention

log = logging.getLogger(__name__)

MAX_CONFLICT_ROUNDS = 8
DUPLICATE_KEY = 11000


class ProjectionContention(RuntimeError):
    """Other writers kept changing the same projections; the batch is retried later."""


@dataclass
class FoldResult:
    committed: list[CommittedEvent] = field(default_factory=list)
    touched: dict[str, Task] = field(default_factory=dict)  # task id -> state after the batch
    unfoldable: set[str] = field(default_factory=set)  # task ids whose fold raised
    unknown: set[str] = field(default_factory=set)  # task ids with no task document


@dataclass
class _Plan:
    stored: Task | None
    after: Task
    items: list[CommittedEvent]
    write: Op | None


class Projector:
    def __init__(self, store: Store, retention: Retention) -> None:
        self.store = store
        self.retention = retention

    async def fold_batch(self, events: list[TaskEvent]) -> FoldResult:
        unique = {e.event_id: e for e in events}
        docs = await self._documents({e.task_id for e in unique.values()})
        for doc in docs.values():
            submitted = pending_submitted(doc)
            if submitted is not None:
                unique.setdefault(submitted.event_id, submitted)
        duplicates = await self.append(list(unique.values()))
        pending: dict[str, list[TaskEvent]] = defaultdict(list)
        for e in unique.values():
            pending[e.task_id].append(e)
        result = FoldResult()
        wire = {e.event_id for e in events}
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                break
            pending = await self._project(pending, docs, duplicates, wire, result)
            docs = {}
        if pending:
            raise ProjectionContention(f"{len(pending)} projections kept conflicting")
        metrics.FOLD_BATCH_SIZE.observe(len(events))
        return result

    async def _documents(self, task_ids: set[str]) -> dict[str, Doc]:
        return await self.store.documents.get_many(list(task_ids))

    async def append(self, events: list[TaskEvent]) -> set[str]:
        """Insert into the log; returns the ids that were already there."""
        if not events:
            return set()
        now = datetime.now(UTC)
        docs = [event_to_doc(e, expires_at=self.retention.expires_at(e, now)) for e in events]
        try:
            await self.store.events.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            dupes: set[str] = set()
            for err in exc.details.get("writeErrors", []):
                if err.get("code") != DUPLICATE_KEY:
                    raise
                dupes.add(docs[err["index"]]["_id"])
            metrics.EVENTS_DUPLICATE.inc(len(dupes))
            return dupes
        return set()

    async def _project(
        self,
        by_task: dict[str, list[TaskEvent]],
        docs: dict[str, Doc],
        duplicates: set[str],
        wire: set[str],
        result: FoldResult,
    ) -> dict[str, list[TaskEvent]]:
        """Fold and write each task's projection; returns the tasks that hit a conflict."""
        docs = docs or await self._documents(set(by_task))
        plans: dict[str, _Plan] = {}
        refold: list[str] = []
        for task_id, new in by_task.items():
            doc = docs.get(task_id)
            if doc is None:
                log.warning("Events for unknown task %s are kept in the log only.", task_id)
                result.unknown.add(task_id)
                continue
            try:
                stored = state_of(doc)
                if stored is not None and all(
                    e.event_id not in duplicates and e.sequence > stored.version for e in new
                ):
                    after, items = fold_from(stored, new)
                    if after is not None:
                        write = _write_for(doc, stored, after, new, wire)
                        plans[task_id] = _Plan(stored, after, items, write)
                else:
                    refold.append(task_id)
            except Exception:
                _unfoldable(result, task_id)
        if refold:
            await self._refold(refold, by_task, docs, wire, plans, result)
        conflicts = await self._write(plans, docs)
        for task_id, plan in plans.items():
            if task_id not in conflicts:
                result.committed.extend(plan.items)
                result.touched[task_id] = plan.after
                _observe(plan)
        return {t: by_task[t] for t in conflicts}

    async def _refold(
        self,
        task_ids: list[str],
        by_task: dict[str, list[TaskEvent]],
        docs: dict[str, Doc],
        wire: set[str],
        plans: dict[str, _Plan],
        result: FoldResult,
    ) -> None:
        logs = await load_logs(self.store, task_ids)
        for task_id in task_ids:
            doc, new = docs[task_id], by_task[task_id]
            try:
                stored = state_of(doc)
                events = merged(logs[task_id], new)
                after, items = fold_from(seed_of(stored), events, {e.event_id for e in new})
            except Exception:
                _unfoldable(result, task_id)
                continue
            if after is not None:
                write = _write_for(doc, stored, after, new, wire)
                plans[task_id] = _Plan(stored, after, items, write)

    async def _write(self, plans: dict[str, _Plan], docs: dict[str, Doc]) -> set[str]:
        writes = [p.write for p in plans.values() if p.write is not None]
        if await self.store.documents.write_projections(writes) == len(writes):
            return set()
        # Another writer (a replica, a rebuild) got there first. A task is settled only if
        # the stored projection already says what ours says; the others fold again.
        written = [t for t, p in plans.items() if p.write is not None]
        current = await self.store.documents.get_many(written)
        return {
            t
            for t in written
            if t not in current or projection_update(state_of(current[t]), plans[t].after)
        }


def pending_submitted(doc: Doc) -> TaskEvent | None:
    """The ``task.submitted`` of a task whose projection the API pre-wrote (version 0).

    Another event of the task may arrive before its submitted event. The API's outbox
    entry holds that very event, so it is logged along with the first one that arrives:
    the log then always starts with the submission, and the fold of the log equals the
    projection from the first write on.
    """
    if doc.get("version") != 0:
        return None
    entry = outbox_entry(doc, event_id_for(doc["_id"], 1))
    return None if entry is None else at_store_precision(entry.event)


def _write_for(
    doc: Doc, stored: Task | None, after: Task, new: list[TaskEvent], wire: set[str]
) -> Op | None:
    """The conditional update that takes the document from ``stored`` to ``after``.

    Outbox entries are cleared only for events that came over the wire: an entry's event
    arriving proves its dispatch was published, a copy taken from the outbox does not.
    """
    outbox = ExecState.of(doc).outbox
    folded = [e.event_id for e in new if e.event_id in outbox and e.event_id in wire]
    return write_projection(doc, projection_update(stored, after), folded)


def _observe(plan: _Plan) -> None:
    for item in plan.items:
        metrics.EVENTS_FOLDED.labels(item.event.type.value).inc()
        if item.event.traceparent:  # the fold, as a step of the task's own trace
            start_span(
                f"fold {item.event.type.value}",
                item.event.traceparent,
                {"taskcore.task_id": item.event.task_id, "taskcore.sequence": item.event.sequence},
            ).end()
    after, stored = plan.after, plan.stored
    if after.status is TaskStatus.FAILED and not (stored is not None and stored.status.is_terminal):
        metrics.TASKS_FAILED.labels(after.task_type).inc()
    if after.status.is_terminal and not (stored is not None and stored.status.is_terminal):
        finished = after.finished_at or after.updated_at
        metrics.SUBMIT_TO_TERMINAL_SECONDS.labels(after.task_type, after.status.value).observe(
            max(0.0, (finished - after.created_at).total_seconds())
        )


def _unfoldable(result: FoldResult, task_id: str) -> None:
    log.exception("The events of task %s cannot be folded; they stay in the log.", task_id)
    result.unfoldable.add(task_id)
