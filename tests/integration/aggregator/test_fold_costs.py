"""What a fold costs the store, counted: a task's submission folds without reading or
writing its document; a fast task's start and end fold with one projection write; and
the documents the aggregator remembers never make a projection wrong."""

from __future__ import annotations

import random
from datetime import timedelta

from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store
from taskcore.domain.events import EventType
from taskcore.domain.evolve import fold
from taskcore.taskdoc import ExecState
from taskcore_aggregator.projection import state_of
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.retention import Retention

from .chaos import Scenario


def _documents(kind: str) -> float:
    """Documents of ``kind`` (read, written) over every collection."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "taskcore_store_documents":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("kind") == kind:
                    total += sample.value
    return total


def _projector(store: Store) -> Projector:
    return Projector(store, Retention(timedelta(days=1)))


async def test_a_submission_folds_without_reading_or_writing_its_document(store: Store) -> None:
    scenario = Scenario()
    h = scenario.new_task(random.Random(1))
    await scenario.insert(store)
    projector = _projector(store)
    read, written = _documents("read"), _documents("written")

    result = await projector.fold_batch([h.submitted])

    assert _documents("read") - read == 0
    assert _documents("written") - written == 1  # the log entry, nothing else
    assert [i.event.event_id for i in result.committed] == [h.submitted.event_id]
    # its outbox entry waits for the task's next write
    doc = await store.documents.get(h.task_id)
    assert doc is not None
    assert ExecState.of(doc).outbox == {h.submitted.event_id}


async def test_a_fast_task_folds_its_start_and_end_with_one_write_that_also_clears_its_outbox(
    store: Store,
) -> None:
    scenario = Scenario()
    h = scenario.new_task(random.Random(2))
    await scenario.insert(store)
    projector = _projector(store)
    await projector.fold_batch([h.submitted])
    h.claim(1, progress=0)
    h.add(EventType.COMPLETED, {"result": {"ok": True}})
    read, written = _documents("read"), _documents("written")

    await projector.fold_batch(h.events[1:])

    assert _documents("read") - read == 0
    assert _documents("written") - written == 3  # two log entries and one projection write
    doc = await store.documents.get(h.task_id)
    assert doc is not None
    assert state_of(doc) == fold(h.events)
    assert ExecState.of(doc).outbox == frozenset(), "the submission's entry went with it"


async def test_a_deferred_outbox_clear_is_written_once_its_delay_is_over(store: Store) -> None:
    scenario = Scenario()
    h = scenario.new_task(random.Random(3))
    await scenario.insert(store)
    projector = Projector(store, Retention(timedelta(days=1)), clear_after_s=0)
    await projector.fold_batch([h.submitted])

    assert await projector.flush_clears() == 1

    doc = await store.documents.get(h.task_id)
    assert doc is not None
    assert ExecState.of(doc).outbox == frozenset()
    assert await projector.flush_clears() == 0


async def test_a_remembered_document_another_writer_changed_costs_a_read_not_a_wrong_state(
    store: Store,
) -> None:
    scenario = Scenario()
    h = scenario.new_task(random.Random(4))
    await scenario.insert(store)
    first, second = _projector(store), _projector(store)
    h.claim(1, progress=2)
    started, *progress = h.events[1:]
    await first.fold_batch([h.submitted, started])
    # Another replica folds the later events, behind the first one's back
    h.add(EventType.COMPLETED, {"result": {}})
    await second.fold_batch([*progress, h.events[-1]])
    read = _documents("read")

    # When the first one, remembering the document as it left it, folds a late duplicate
    await first.fold_batch([progress[0]])

    assert _documents("read") - read >= 1, "its stale copy was found out and read again"
    doc = await store.documents.get(h.task_id)
    assert doc is not None
    assert state_of(doc) == fold(h.events)
