"""Exactly-once folding on the real broker and store: duplicates, reordering, late events,
crashes between append and projection, old event versions and poison messages."""

from __future__ import annotations

import json
import random
from datetime import timedelta

from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.domain.events import EventType
from taskcore.domain.evolve import fold
from taskcore.domain.status import TaskStatus
from taskcore.messages.envelope import CommittedBatch, EventBatch
from taskcore.messages.topology import (
    BRIDGE_QUEUE,
    DEAD_LETTER_QUEUE,
    INTERNAL_EVENTS_EXCHANGE,
)
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.rebuild import rebuild
from taskcore_aggregator.retention import Retention

from .chaos import Scenario, chaotic, in_messages, mixed_scenario, publish
from .harness import (
    projections,
    queue_drained,
    running_aggregator,
    wait_for_log,
    wait_for_projections,
)


async def drain(connection: AbstractRobustConnection, queue_name: str) -> list[bytes]:
    """Everything on a queue right now (acked, so the queue is left empty)."""
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=False)
    bodies = []
    while (msg := await queue.get(fail=False, no_ack=True)) is not None:
        bodies.append(msg.body)
    await channel.close()
    return bodies


async def test_duplicated_and_shuffled_events_are_logged_once_and_fold_to_the_ordered_state(
    settings: Settings, store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    # Given 120 tasks with varied lives, their events shuffled, a third sent twice
    rng = random.Random(5)
    scenario = mixed_scenario(rng, 120)
    await scenario.insert(store)
    unique = scenario.events
    stream = chaotic(unique, rng, duplicates=0.35)
    assert len(stream) > len(unique) * 1.25
    # When they reach the aggregator in messages of up to six events
    async with running_aggregator(settings):
        await publish(publisher, in_messages(stream, rng))
        # Then every event is in the log exactly once
        await wait_for_log(store, len(unique))
        # and every projection is the fold of its task's events in sequence order
        live = await wait_for_projections(store, scenario.expected())
        await queue_drained(connection)
    assert await store.events.count_documents({}) == len(unique)
    logged = {d["_id"] async for d in store.events.find({}, {"_id": 1})}
    assert logged == {e.event_id for e in unique}
    # a duplicated started is not a second attempt
    for task_id, history in scenario.histories.items():
        starts = sum(e.type is EventType.STARTED for e in history.events)
        assert live[task_id].attempts == starts
    # and every event was handed to the bridge after its commit, at least once
    bodies = await drain(connection, BRIDGE_QUEUE)
    handed = {i.event.event_id for b in bodies for i in CommittedBatch.model_validate_json(b).items}
    assert handed == {e.event_id for e in unique}


async def test_a_late_progress_never_reopens_a_completed_task(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(1)
    scenario = Scenario()
    h = scenario.new_task(rng)
    h.claim(1, progress=0)
    progress = h.add(EventType.PROGRESS, {"progress": {"step": 1}})
    completed = h.add(EventType.COMPLETED, {"result": {"ok": True}})
    await scenario.insert(store)
    async with running_aggregator(settings):
        # Given the task completed without its progress event
        others = [e for e in h.events if e is not progress]
        await publish(publisher, [EventBatch(events=others)])
        await wait_for_projections(store, {h.task_id: fold(others)})  # type: ignore[dict-item]
        # When the progress arrives late
        await publish(publisher, [EventBatch(events=[progress])])
        await wait_for_log(store, len(h.events))
        # Then the task stays COMPLETED, as a fold in sequence order says
        live = await wait_for_projections(store, scenario.expected())
    assert live[h.task_id].status is TaskStatus.COMPLETED
    assert live[h.task_id].version == completed.sequence
    assert live[h.task_id].progress == {"step": 1}


async def test_a_gap_is_filled_by_a_refold_when_the_missing_event_arrives(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(2)
    scenario = Scenario()
    h = scenario.new_task(rng)
    h.claim(1, progress=0)
    h.add(EventType.COMPLETED, {"result": {"n": 1}})
    submitted, started, completed = h.events
    await scenario.insert(store)
    async with running_aggregator(settings):
        # Given the completion folded before the start it follows
        await publish(publisher, [EventBatch(events=[submitted, completed])])
        early = await wait_for_projections(store, {h.task_id: fold([submitted, completed])})  # type: ignore[dict-item]
        assert early[h.task_id].attempts == 0
        # When the start arrives
        await publish(publisher, [EventBatch(events=[started])])
        # Then it is not skipped: the projection re-folds to the ordered history
        live = await wait_for_projections(store, scenario.expected())
    assert live[h.task_id].attempts == 1
    assert live[h.task_id].started_at == started.occurred_at
    assert live[h.task_id].execution_node_id == "node-1"


async def test_a_crash_between_append_and_projection_heals_on_redelivery(
    settings: Settings, store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    rng = random.Random(3)
    scenario = mixed_scenario(rng, 20)
    await scenario.insert(store)
    # Given every event appended to the log by an aggregator that died before projecting
    appended = await Projector(store, Retention(timedelta(days=1))).append(scenario.events)
    assert appended == set()
    assert all(d["version"] == 1 for d in (await store.tasks.find({}).to_list(None)))
    # When the events are redelivered
    async with running_aggregator(settings):
        await publish(publisher, in_messages(scenario.events, rng))
        # Then they are recognised as already logged, and the projections still catch up
        await wait_for_projections(store, scenario.expected())
        await queue_drained(connection)
    assert await store.events.count_documents({}) == len(scenario.events)
    # and the hand-off to the bridge still announces every one of them
    bodies = await drain(connection, BRIDGE_QUEUE)
    handed = {i.event.event_id for b in bodies for i in CommittedBatch.model_validate_json(b).items}
    assert handed == {e.event_id for e in scenario.events}


async def test_an_old_version_event_is_upcast_on_the_wire_and_in_the_log(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(4)
    scenario = Scenario()
    h = scenario.new_task(rng)
    h.claim(1, progress=0)
    await scenario.insert(store)
    # Given a version-1 dead-letter event, whose error was a bare string
    v1 = {
        "event_id": f"{h.task_id}:3",
        "task_id": h.task_id,
        "sequence": 3,
        "type": "task.dead_lettered",
        "schema_version": 1,
        "occurred_at": "2026-03-01T00:00:01+00:00",
        "data": {"error": "disk full", "reason": "non_retryable"},
    }
    body = json.dumps({"events": [e.model_dump(mode="json") for e in h.events] + [v1]})
    async with running_aggregator(settings):
        # When an old producer sends it
        await publisher.publish(INTERNAL_EVENTS_EXCHANGE, "task.batch", amqp_message(body.encode()))

        async def dead() -> bool:
            doc = await store.tasks.find_one({"_id": h.task_id})
            return bool(doc and doc["status"] == "DEAD_LETTER")

        await wait_for_async(dead, timeout=20, message="dead-lettered")
    # Then the projection holds the error in today's shape
    live = (await projections(store))[h.task_id]
    assert live.error is not None
    assert (live.error.type, live.error.message) == ("Error", "disk full")
    # and a version-1 event stored in the log (by an older aggregator) is upcast on read
    await store.events.update_one(
        {"_id": v1["event_id"]}, {"$set": {"schema_version": 1, "data": v1["data"]}}
    )
    stored = await store.events.find_one({"_id": v1["event_id"]})
    assert stored is not None
    assert stored["data"]["error"] == "disk full"
    report = await rebuild(store, check=True)
    assert report.clean, report.summary(True)


async def test_unreadable_and_unfoldable_messages_are_dead_lettered_and_the_rest_folds(
    settings: Settings, store: Store, publisher: Publisher, connection: AbstractRobustConnection
) -> None:
    rng = random.Random(6)
    scenario = mixed_scenario(rng, 10)
    broken = scenario.new_task(rng)
    # A submitted event without user_id: the fold of this task cannot build a projection.
    bad = broken.submitted.model_copy(update={"data": {"task_type": "diag.noop"}})
    await scenario.insert(store)
    await store.tasks.update_one({"_id": broken.task_id}, {"$set": {"version": 5}})
    async with running_aggregator(settings):
        await publisher.publish(INTERNAL_EVENTS_EXCHANGE, "task.batch", amqp_message(b"{not json"))
        await publish(publisher, [EventBatch(events=[bad])])
        good = [e for e in scenario.events if e.task_id != broken.task_id]
        await publish(publisher, in_messages(good, rng))
        expected = {t: s for t, s in scenario.expected().items() if t != broken.task_id}
        await wait_for_projections(store, expected)

        await queue_drained(connection)
    dead = await drain(connection, DEAD_LETTER_QUEUE)
    assert b"{not json" in dead
    assert any(bad.event_id.encode() in body for body in dead)
    assert len(dead) == 2


async def test_a_fold_never_clears_a_cancel_flag_set_ahead_of_its_event(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(7)
    scenario = Scenario()
    h = scenario.new_task(rng)
    await scenario.insert(store)
    # Given the executor set cancel_requested on the document; its event is not folded yet
    await store.tasks.update_one({"_id": h.task_id}, {"$set": {"cancel_requested": True}})
    h.claim(1)
    async with running_aggregator(settings):
        await publish(publisher, [EventBatch(events=h.events)])
        expected = fold(h.events)
        assert expected is not None
        await wait_for_projections(
            store, {h.task_id: expected.model_copy(update={"cancel_requested": True})}
        )
    doc = await store.tasks.find_one({"_id": h.task_id})
    assert doc is not None
    assert doc["cancel_requested"]  # the stand-in reads a $set True back as 1
