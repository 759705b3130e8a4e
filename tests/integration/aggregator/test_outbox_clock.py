"""A finished task's outbox clock goes with the aggregator's next flush, so no relay has to
read the task again to find its outbox empty; a task with an entry keeps it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from taskcore.adapters.mongo import Store
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.messages.envelope import OutboxEntry
from taskcore.taskdoc import ExecState
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.retention import Retention

from .chaos import History, Scenario


async def _finished(store: Store, seed: int) -> tuple[Projector, History]:
    """A fast task, submitted, started and completed, folded (its entries cleared)."""
    scenario = Scenario()
    h = scenario.new_task(random.Random(seed))
    await scenario.insert(store)
    projector = Projector(store, Retention(timedelta(days=1)))
    await projector.fold_batch([h.submitted])
    h.claim(1, progress=0)
    h.add(EventType.COMPLETED, {"result": {"ok": True}})
    await projector.fold_batch(h.events[1:])
    return projector, h


async def _clock(store: Store, task_id: str) -> int | None:
    doc = await store.documents.get(task_id)
    assert doc is not None
    return ExecState.of(doc).outbox_at_ms


async def test_a_finished_task_loses_its_outbox_clock_and_the_relay_never_reads_it(
    store: Store,
) -> None:
    projector, h = await _finished(store, 11)
    assert await _clock(store, h.task_id) is not None  # still set: the flush has not run

    await projector.flush_clears()

    assert await _clock(store, h.task_id) is None
    far_future = store.documents.clock() + 3_600_000
    stale = await store.documents.stale_outboxes(far_future, 100)
    assert h.task_id not in {d["_id"] for d in stale}


async def test_an_entry_added_after_the_fold_keeps_the_clock_for_the_relay(store: Store) -> None:
    projector, h = await _finished(store, 12)
    late = TaskEvent(
        event_id=event_id_for(h.task_id, 5000),
        task_id=h.task_id,
        sequence=5000,
        type=EventType.STEP_FAILED,
        occurred_at=datetime(2030, 1, 1, tzinfo=UTC),
        data={"reason": "late"},
    )
    assert await store.documents.add_to_outbox(h.task_id, OutboxEntry(event=late))

    await projector.flush_clears()

    assert await _clock(store, h.task_id) is not None
    doc = await store.documents.get(h.task_id)
    assert doc is not None
    assert ExecState.of(doc).outbox == {late.event_id}


async def test_an_unfinished_task_keeps_its_clock(store: Store) -> None:
    scenario = Scenario()
    h = scenario.new_task(random.Random(13))
    await scenario.insert(store)
    projector = Projector(store, Retention(timedelta(days=1)), clear_after_s=0)
    await projector.fold_batch([h.submitted])

    await projector.flush_clears()  # clears the submission's entry, the task is queued

    assert await _clock(store, h.task_id) is not None
