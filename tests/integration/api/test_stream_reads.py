"""What a stream reads from the store when it resumes or resyncs: the events after the
last one it sent (and the few lifecycle events before, for the status), never the whole
log, however many progress events the task has."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from taskcore.adapters.mongo import Doc, Store, event_to_doc
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore_api.handlers.stream import events_after, state_at

TASK = "t-many-progress"
PROGRESS = 1200


class ReturnedDocs(monitoring.CommandListener):
    """Counts the documents the store sent back for ``find``/``getMore``."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        if isinstance(cursor, dict):
            self.count += len(cursor.get("firstBatch") or cursor.get("nextBatch") or [])

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def event(sequence: int, type_: EventType, data: dict[str, Any] | None = None) -> Doc:
    return event_to_doc(
        TaskEvent(
            event_id=f"{TASK}:{sequence}",
            task_id=TASK,
            sequence=sequence,
            type=type_,
            occurred_at=datetime.now(UTC),
            data=data or {},
        )
    )


@pytest.fixture
async def counted(mongo_url: str, store: Store) -> AsyncIterator[tuple[Any, ReturnedDocs]]:
    submitted = {"user_id": "alice", "task_type": "diag.sleep", "parameters": {}}
    log = [event(1, EventType.SUBMITTED, submitted), event(2, EventType.STARTED)]
    log += [event(3 + i, EventType.PROGRESS, {"progress": {"done": i}}) for i in range(PROGRESS)]
    log.append(event(3 + PROGRESS, EventType.COMPLETED, {"result": {}}))
    await store.events.insert_many(log)
    listener = ReturnedDocs()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        mongo_url, tz_aware=True, event_listeners=[listener]
    )
    yield SimpleNamespace(store=Store(client, store.db.name)), listener
    await client.close()


async def test_a_resumed_stream_reads_the_lifecycle_before_and_only_the_events_after(
    counted: tuple[Any, ReturnedDocs],
) -> None:
    deps, docs = counted
    last_sent = PROGRESS - 5  # the client saw all but the last few progress events
    state = await state_at(deps, TASK, last_sent)
    assert state is not None
    assert state.status is TaskStatus.RUNNING
    sent = [item async for item, _ in events_after(deps, TASK, state, last_sent)]
    assert [e.sequence for e in sent] == list(range(last_sent + 1, PROGRESS + 4))
    assert sent[-1].status is TaskStatus.COMPLETED
    assert [e.status for e in sent[:-1]] == [TaskStatus.RUNNING] * (len(sent) - 1)
    # submitted and started for the status, then the 8 events after: not 1,200 progress
    assert docs.count == 2 + len(sent)


async def test_a_resync_from_the_start_reads_the_log_page_by_page_in_order(
    counted: tuple[Any, ReturnedDocs],
) -> None:
    deps, docs = counted
    sent = [item async for item, _ in events_after(deps, TASK, None, 0)]
    assert [e.sequence for e in sent] == list(range(1, PROGRESS + 4))
    assert sent[0].status is TaskStatus.QUEUED
    assert sent[-1].status is TaskStatus.COMPLETED
    assert docs.count == PROGRESS + 3
