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

import contextlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pymongo.errors import BulkWriteError
from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store, event_to_doc, projection_of, task_to_doc
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.domain.evolve import evolve
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import Task
from taskcore.messages.envelope import CommittedEvent
from taskcore.taskdoc import ExecState, Op
from taskcore.taskdoc.operations import outbox_entry, revision, without_outbox, write_projection
from taskcore.tracing import start_span
from taskcore.usage import ledger

from taskcore_aggregator.projection import (
    at_store_precision,
    committed_item,
    fold_from,
    load_logs,
    merged,
    projection_update,
    state_of,
)
from taskcore_aggregator.retention import Retention

log = logging.getLogger(__name__)

# A fold reads whole documents (``pending_submitted`` needs the outbox) but remembers them
# without their outbox (``KnownDocuments``).
READ_FIELDS = None

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
    cleared: list[str]  # the outbox entries this batch may clear


class Projector:
    def __init__(
        self,
        store: Store,
        retention: Retention,
        *,
        known_capacity: int = 10_000,
        clear_after_s: float = 1.0,
    ) -> None:
        self.store = store
        self.retention = retention
        self.known = KnownDocuments(known_capacity)
        self.clears = DeferredClears(clear_after_s)

    async def fold_batch(self, events: list[TaskEvent]) -> FoldResult:
        unique = {e.event_id: e for e in events}
        by_task = _by_task(unique.values())
        docs, assumed = self._known_or_assumed(by_task)
        read = await self._read([t for t in by_task if t not in docs])
        docs.update(read)
        for doc in read.values():
            submitted = pending_submitted(doc)
            if submitted is not None:
                unique.setdefault(submitted.event_id, submitted)
        duplicates = await self.append(list(unique.values()))
        await ledger.record(self.store.usage, unique.values())  # by event id: idempotent
        # A task assumed new whose submission was logged before is not new: read it.
        seen = {t for t in assumed if any(e.event_id in duplicates for e in by_task[t])}
        docs.update(await self._read(list(seen)))
        pending = _by_task(unique.values())
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

    def _known_or_assumed(
        self, by_task: dict[str, list[TaskEvent]]
    ) -> tuple[dict[str, Doc], set[str]]:
        """Documents the batch can fold without reading them: those this aggregator wrote
        or read lately, and new tasks, whose document the API inserted as the fold of the
        ``task.submitted`` this batch holds (checked by the write's condition, and by the
        log: a submission that turns out to be logged already means a read)."""
        docs: dict[str, Doc] = {}
        assumed: set[str] = set()
        for task_id, events in by_task.items():
            known = self.known.get(task_id)
            if known is not None:
                docs[task_id] = known
                continue
            submitted = next((e for e in events if e.type is EventType.SUBMITTED), None)
            initial = None
            if submitted is not None:
                with contextlib.suppress(Exception):  # unfoldable: the read path says so
                    initial = evolve(None, submitted)
            if initial is not None:
                docs[task_id] = task_to_doc(initial)
                assumed.add(task_id)
        return docs, assumed

    async def _read(self, task_ids: list[str]) -> dict[str, Doc]:
        return await self.store.documents.get_many(task_ids, READ_FIELDS) if task_ids else {}

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
        docs = docs or await self._read(list(by_task))
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
                # The event a projection's version names is in it already (sequences are
                # unique per task): a submission folded into its own document, or a
                # redelivery of the last event folded. It is handed on, not refolded.
                folded = [e for e in new if stored is not None and e.sequence == stored.version]
                rest = [e for e in new if e not in folded]
                if stored is not None and all(
                    e.event_id not in duplicates and e.sequence > stored.version for e in rest
                ):
                    after, items = fold_from(stored, rest)
                    if after is not None:
                        items = [committed_item(e, stored) for e in folded] + items
                        plans[task_id] = self._plan(doc, stored, after, items, new, wire)
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

    def _plan(
        self,
        doc: Doc,
        stored: Task | None,
        after: Task,
        items: list[CommittedEvent],
        new: list[TaskEvent],
        wire: set[str],
    ) -> _Plan:
        """The write that takes the document from ``stored`` to ``after``, if any.

        Outbox entries are cleared only for events that came over the wire: an entry's
        event arriving proves its dispatch was published, a copy taken from the outbox
        does not.

        A fold that changes nothing still writes (it only takes a revision): another fold
        from the same revision may have read the log before these events were appended,
        and must then fail its write and fold again; skipping ours would leave its stale
        projection standing. The one exception costs nothing and is the common case:
        events every projection already reflects (a task's submission, which its document
        was inserted as, and the event a projection's version names). Their outbox clears
        wait for the task's next write (or ``flush_clears``).
        """
        cleared = [e.event_id for e in new if e.event_id in wire]
        fields = projection_update(stored, after)
        if not fields and all(_reflected(e, stored) for e in new):
            return _Plan(stored, after, items, None, cleared)
        write = write_projection(doc, fields, [*cleared, *self.clears.pending(doc["_id"])])
        return _Plan(stored, after, items, write, cleared)

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
                after, items = fold_from(None, events, {e.event_id for e in new})
            except Exception:
                _unfoldable(result, task_id)
                continue
            if after is not None:
                plans[task_id] = self._plan(doc, stored, after, items, new, wire)

    async def _write(self, plans: dict[str, _Plan], docs: dict[str, Doc]) -> set[str]:
        writes = [p.write for p in plans.values() if p.write is not None]
        conflicts: set[str] = set()
        if await self.store.documents.write_projections(writes) != len(writes):
            # Another writer (a replica, a rebuild) got there first. A task is settled only
            # if the stored projection already says what ours says; the others fold again.
            written = [t for t, p in plans.items() if p.write is not None]
            current = await self._read(written)
            conflicts = {
                t
                for t in written
                if t not in current or projection_update(state_of(current[t]), plans[t].after)
            }
        for task_id, plan in plans.items():
            if task_id in conflicts:
                self.known.drop(task_id)
                continue
            doc = docs[task_id]
            if plan.write is None:
                self.clears.add(task_id, plan.cleared)
                self.known.put(task_id, doc)
            else:
                self.clears.done(task_id)
                self.known.put(task_id, _after_write(doc, plan.after))
            if plan.after.status.is_terminal:
                self.clears.finished(task_id)
        return conflicts

    async def flush_clears(self, *, everything: bool = False) -> int:
        """Write the outbox clears left pending longer than their delay (or all of them),
        then drop the outbox clock of finished tasks whose outbox is now empty (otherwise
        every service's relay would read each finished task once more, 15 s later, to
        find it empty); returns how many tasks' entries were cleared."""
        due = self.clears.due(everything=everything)
        if due:
            await self.store.documents.clear_outboxes(due)
        await self.store.documents.forget_if_drained(self.clears.take_finished())
        return len(due)


class KnownDocuments:
    """The projections (and write counters) this aggregator last read or wrote, so the
    next batch of the same tasks folds without reading their documents again.

    Safe because every projection write stays conditional on the document's ``fold_rev``:
    an entry another writer made stale (a replica, a rebuild) costs one conflict and a
    fresh read, never a wrong projection. Bounded, least recently used first out.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._docs: OrderedDict[str, Doc] = OrderedDict()

    def get(self, task_id: str) -> Doc | None:
        doc = self._docs.get(task_id)
        if doc is not None:
            self._docs.move_to_end(task_id)
        return doc

    def put(self, task_id: str, doc: Doc) -> None:
        if self.capacity <= 0:
            return
        self._docs[task_id] = without_outbox(doc)
        self._docs.move_to_end(task_id)
        while len(self._docs) > self.capacity:
            self._docs.popitem(last=False)

    def drop(self, task_id: str) -> None:
        self._docs.pop(task_id, None)


class DeferredClears:
    """Outbox entries whose events are folded but whose clearing waits for the task's next
    projection write, or ``delay_s``, whichever comes first. Lost with a crash, they cost
    the relay one re-send of events the log already holds (a duplicate, which folds to
    nothing)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._pending: dict[str, tuple[float, set[str]]] = {}
        self._finished: set[str] = set()

    def finished(self, task_id: str) -> None:
        """The task's projection is terminal: once its entries are cleared, its outbox
        clock can go (``take_finished``)."""
        self._finished.add(task_id)

    def take_finished(self) -> list[str]:
        """The finished tasks with no clear pending here, forgotten as they are returned
        (a task with a pending clear waits for it: its outbox is not empty yet)."""
        ready = sorted(t for t in self._finished if t not in self._pending)
        self._finished.difference_update(ready)
        return ready

    def add(self, task_id: str, event_ids: list[str]) -> None:
        if event_ids:
            since, ids = self._pending.get(task_id, (time.monotonic(), set()))
            self._pending[task_id] = (since, ids | set(event_ids))

    def pending(self, task_id: str) -> list[str]:
        return sorted(self._pending.get(task_id, (0.0, set()))[1])

    def done(self, task_id: str) -> None:
        self._pending.pop(task_id, None)

    def due(self, *, everything: bool = False) -> dict[str, list[str]]:
        cutoff = time.monotonic() - self.delay_s
        due = {
            task_id: sorted(ids)
            for task_id, (since, ids) in self._pending.items()
            if everything or since <= cutoff
        }
        for task_id in due:
            del self._pending[task_id]
        return due


def _reflected(event: TaskEvent, stored: Task | None) -> bool:
    """Whether every projection of the task already shows ``event``."""
    if event.type is EventType.SUBMITTED:
        return True
    return stored is not None and event.sequence == stored.version


def _by_task(events: Iterable[TaskEvent]) -> dict[str, list[TaskEvent]]:
    grouped: dict[str, list[TaskEvent]] = defaultdict(list)
    for e in events:
        grouped[e.task_id].append(e)
    return grouped


def _after_write(doc: Doc, after: Task) -> Doc:
    """What the document holds once a projection write from ``doc`` to ``after`` landed."""
    rev = ExecState.of(doc).fold_rev or 0
    return {**doc, **projection_of(after), **revision(rev + 1)}


def pending_submitted(doc: Doc) -> TaskEvent | None:
    """The ``task.submitted`` of a task whose submission is still in its outbox.

    Another event of the task may arrive before its submitted event. The API's outbox
    entry holds that very event, so it is logged along with the first one that arrives
    (a duplicate if it was logged already): the log then always starts with the
    submission, and the fold of the log equals the projection from the first write on.
    """
    entry = outbox_entry(doc, event_id_for(doc["_id"], 1))
    return None if entry is None else at_store_precision(entry.event)


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
