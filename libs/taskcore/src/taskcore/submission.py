"""Creating tasks: the one dispatch path the API and subtask-spawning executors share.

A new task is ONE inserted document: its initial projection, the executor bookkeeping,
and an outbox entry holding the dispatch message and the ``task.submitted`` event. After
the insert the entry is published (dispatch confirmed first, then the event). A crash in
between leaves the entry for the relay: never a stored task that is not dispatched, and
never a message for a task that was not stored.

A delayed task (``scheduled_for`` in the future) waits where ``domain.delays`` says: its
dispatch goes to a delay queue whose TTL fits, or it is left out of the outbox and the
document keeps the due time for the due-dispatch sweep (``taskcore.due_dispatch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from taskcore.adapters.mongo import Doc, Store, doc_to_task, task_to_doc
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.clock import to_ms
from taskcore.domain.delays import ViaQueue, ViaStore, route_delay
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.domain.evolve import evolve
from taskcore.domain.task import Task, Tier
from taskcore.messages.envelope import Dispatch, OutboxEntry, TaskMessage
from taskcore.messages.topology import RETRY_EXCHANGE, retry_routing_key
from taskcore.outbox import deliver_or_defer
from taskcore.taskdoc import ExecState, operations
from taskcore.tracing import current_traceparent


@dataclass(frozen=True)
class NewTask:
    user_id: str
    task_type: str
    parameters: dict[str, Any]
    priority: int = 0
    max_attempts: int = 3
    tier: Tier = "paid"
    parent_task_id: str | None = None
    root_task_id: str | None = None
    depth: int = 0  # levels below its root
    subtask_policy: str = "collect_all"
    failure_threshold: float | None = None  # for the "threshold" subtask policy
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    request_hash: str | None = None
    traceparent: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    team_id: str | None = None
    # Derived projection fields to insert with it (a workflow's first ``workflow`` view).
    derived: dict[str, Any] = field(default_factory=dict)
    # Not dispatched before this time (None: at once); set by a delayed submission or,
    # with ``schedule_id``, the due time of the schedule that made the task.
    scheduled_for: datetime | None = None
    schedule_id: str | None = None
    # Each attempt's time limit, when the submission set one (else the type's own).
    timeout_seconds: float | None = None


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def submitted_event(new: NewTask, now: datetime) -> TaskEvent:
    return TaskEvent(
        event_id=event_id_for(new.task_id, 1),
        task_id=new.task_id,
        sequence=1,
        type=EventType.SUBMITTED,
        occurred_at=now,
        data={
            "user_id": new.user_id,
            "task_type": new.task_type,
            "parameters": new.parameters,
            "priority": new.priority,
            "max_attempts": new.max_attempts,
            "tier": new.tier,
            "parent_task_id": new.parent_task_id,
            "root_task_id": new.root_task_id or new.task_id,
            "subtask_policy": new.subtask_policy,
            **({"depth": new.depth} if new.depth else {}),
            **({"labels": new.labels} if new.labels else {}),
            **({"team_id": new.team_id} if new.team_id else {}),
            **(
                {"scheduled_for": new.scheduled_for.astimezone(UTC).isoformat()}
                if new.scheduled_for is not None
                else {}
            ),
            **({"schedule_id": new.schedule_id} if new.schedule_id else {}),
            **({"timeout_seconds": new.timeout_seconds} if new.timeout_seconds is not None else {}),
            **(
                {"failure_threshold": new.failure_threshold}
                if new.failure_threshold is not None
                else {}
            ),
        },
        traceparent=new.traceparent,
    )


def new_task_document(new: NewTask, now: datetime) -> tuple[Doc, OutboxEntry]:
    event = submitted_event(new, now)
    task = evolve(None, event)
    assert task is not None
    # The projection is written here as the fold of the submitted event, so folding that
    # event later changes nothing (the aggregator then has nothing to write for it).
    projection = {**task_to_doc(task), **new.derived}
    message = TaskMessage(
        task_id=new.task_id,
        task_type=new.task_type,
        user_id=new.user_id,
        tier=new.tier,
        priority=new.priority,
        parameters=new.parameters,
        dispatch=1,
    )
    route = route_delay(new.scheduled_for, now)
    dispatch: Dispatch | None = Dispatch(message=message, traceparent=new.traceparent)
    if isinstance(route, ViaQueue):
        dispatch = Dispatch(
            message=message,
            exchange=RETRY_EXCHANGE,
            routing_key=retry_routing_key(route.tier_s, new.tier),
            traceparent=new.traceparent,
        )
    elif isinstance(route, ViaStore):
        dispatch = None  # the due-dispatch sweep sends it when it is due
    entry = OutboxEntry(event=event, dispatch=dispatch)
    doc = operations.new_document(
        projection,
        [entry],
        request_hash=new.request_hash,
        now_ms=to_ms(now),
        due_ms=route.due_ms if isinstance(route, ViaStore) else None,
    )
    return doc, entry


@dataclass(frozen=True)
class Submitted:
    task: Task
    created: bool  # False: an earlier submission with the same id (idempotency key)
    conflict: bool = False  # the earlier submission had a different body
    failed: str | None = None  # the store refused it (nothing was created): why


class Deliveries:
    """Publishes that go on after the caller has its answer.

    A new task is safe once its document (and the outbox in it) is stored: its messages
    are then published here in the background, and if the process dies first, the outbox
    relay publishes them. So an HTTP submission answers after one store round trip, not
    after two broker confirms. ``drain`` lets a stopping process finish what it started.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Task[bool]] = set()

    def start(self, publisher: Publisher, entries: list[OutboxEntry]) -> None:
        if entries:
            task = asyncio.get_running_loop().create_task(deliver_or_defer(publisher, entries))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def drain(self, timeout_s: float) -> None:
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)


async def submit_tasks(
    store: Store,
    publisher: Publisher,
    batch: list[NewTask],
    deliveries: Deliveries | None = None,
) -> list[Submitted]:
    """Insert and dispatch new tasks in bulk; results in the order given. With
    ``deliveries`` the publishes go on in the background (see ``Deliveries``)."""
    if not batch:
        return []
    now = datetime.now(UTC)
    # Children and API submissions join the trace they were made in: one trace per tree.
    trace = current_traceparent()
    if trace:
        batch = [new if new.traceparent else replace(new, traceparent=trace) for new in batch]
    prepared = [new_task_document(new, now) for new in batch]
    inserted = await store.documents.insert_new([doc for doc, _ in prepared])
    created = [
        entry
        for (doc, entry) in prepared
        if doc["_id"] not in inserted.duplicates and doc["_id"] not in inserted.failed
    ]
    if deliveries is None:
        await deliver_or_defer(publisher, created)
    else:
        deliveries.start(publisher, created)
    existing = await store.documents.get_many(list(inserted.duplicates))
    results = []
    for new, (doc, _) in zip(batch, prepared, strict=True):
        task_id = doc["_id"]
        if task_id in inserted.failed:
            results.append(
                Submitted(doc_to_task(doc), created=False, failed=inserted.failed[task_id])
            )
        elif task_id in inserted.duplicates:
            old = existing[task_id]
            conflict = ExecState.of(old).request_hash != new.request_hash
            results.append(Submitted(doc_to_task(old), created=False, conflict=conflict))
        else:
            results.append(Submitted(doc_to_task(doc), created=True))
    return results
