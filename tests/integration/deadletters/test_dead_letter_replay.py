"""Replaying and discarding one dead letter: once, whatever is retried, raced or crashed.

No executor runs here: a replayed task's new dispatch stays on ``tasks.paid.queue``, where
the tests count it. Tasks die through the executor's own claim and outcome code."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store, now_ms
from taskcore.adapters.rabbit import Publisher, message
from taskcore.messages.topology import task_queue_name
from taskcore.poison import dead_letter_poison
from taskcore.testing import wait_for_async
from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.results import ReplayRefused
from taskcore_api.deadletters.worker import DeadLetterWorker

from tests.integration.deadletters.conftest import (
    dead_task,
    dispatches,
    kill_attempt,
    outbox_events,
    parked,
    queue_depth,
    take,
)

PAID = task_queue_name("paid")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_replaying_a_dead_task_dispatches_it_once_with_a_fresh_budget(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = await dead_task(store, publisher, connection)
    labels = {"reason": "non_retryable", "task_type": "diag.fail", "mode": "task"}
    replays_before = metric("taskcore_dead_letters_replayed_total", **labels)
    # When an admin replays the dead letter, twice
    first = await actions.replay(dead.dead_letter_id, by="root")
    second = await actions.replay(dead.dead_letter_id, by="root")
    # then it was replayed by the first call only
    assert (first.outcome, second.outcome) == ("replayed", "already_replayed")
    assert first.record["state"] == "replayed"
    assert first.record["replayed_at_ms"]
    # and exactly one new dispatch went out: the next number, with a fresh retry budget
    [sent] = await dispatches(connection, 1)
    assert (sent.task_id, sent.dispatch, sent.retry_count) == (dead.task_id, 2, 0)
    assert await queue_depth(connection, PAID) == 0
    # and the task is open again, with a replayed event that links the dead letter
    task = await store.tasks.find_one({"_id": dead.task_id})
    assert task is not None
    assert task["exec"]["open"]  # (the stand-in hands back a $set True as 1)
    assert task["exec"]["dispatch_no"] == 2
    assert task["exec"]["done_no"] == 1
    assert task["dlq"] == {"replays": 1, "last_replay_of": dead.dead_letter_id}
    [replayed] = await outbox_events(store, dead.task_id, "task.replayed")
    assert replayed["data"]["dead_letter_id"] == dead.dead_letter_id
    assert metric("taskcore_dead_letters_replayed_total", **labels) == replays_before + 1


async def test_concurrent_replays_of_one_dead_letter_dispatch_it_once(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = await dead_task(store, publisher, connection)
    outcomes = await asyncio.gather(
        *(actions.replay(dead.dead_letter_id, by="root") for _ in range(6))
    )
    assert sorted(o.outcome for o in outcomes).count("replayed") == 1
    await dispatches(connection, 1)
    assert await queue_depth(connection, PAID) == 0
    assert len(await outbox_events(store, dead.task_id, "task.replayed")) == 1


async def test_a_replay_whose_driver_died_after_reserving_it_is_finished_once_by_the_sweep(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = await dead_task(store, publisher, connection)
    # Given a replay that moved the record to "replaying" and then its process died
    await store.dead_letters.update_one(
        {"_id": dead.dead_letter_id},
        {
            "$set": {
                "state": "replaying",
                "replay": {"mode": "task", "dispatch": 2, "parameters": None, "by": "root"},
                "lease_until_ms": now_ms() - 1,
            }
        },
    )

    # then the worker's sweep finishes it: one dispatch, and the record is replayed
    async def replayed() -> bool:
        record = await store.dead_letters.find_one({"_id": dead.dead_letter_id})
        return bool(record and record["state"] == "replayed")

    await wait_for_async(replayed, timeout=10, message="the abandoned replay finished")
    [sent] = await dispatches(connection, 1)
    assert sent.dispatch == 2
    assert await queue_depth(connection, PAID) == 0


async def test_a_replay_that_died_after_dispatching_does_not_dispatch_again_when_resumed(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
    worker: DeadLetterWorker,
) -> None:
    dead = await dead_task(store, publisher, connection)
    # Given a replay that dispatched the task and died before marking its record
    record = await actions.repo.move(
        dead.dead_letter_id,
        {"state": "pending"},
        "replaying",
        {"replay": {"mode": "task", "dispatch": 2, "parameters": None, "by": "root"},
         "lease_until_ms": now_ms() + 60_000},
    )  # fmt: skip
    assert record is not None
    await actions.replayer._replay_task(record)
    await dispatches(connection, 1)
    # when an admin retries it (the lease is still held: in progress), then it expires
    assert (await actions.replay(dead.dead_letter_id, by="root")).outcome == "in_progress"
    await store.dead_letters.update_one(
        {"_id": dead.dead_letter_id}, {"$set": {"lease_until_ms": now_ms() - 1}}
    )
    resumed = await actions.replay(dead.dead_letter_id, by="root")
    # then the replay completes without a second dispatch
    assert resumed.outcome == "replayed"
    assert await queue_depth(connection, PAID) == 0
    assert len(await outbox_events(store, dead.task_id, "task.replayed")) == 1
    task = await store.tasks.find_one({"_id": dead.task_id})
    assert task is not None
    assert task["dlq"]["replays"] == 1


async def test_edited_parameters_are_validated_like_a_submission(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = await dead_task(store, publisher, connection)
    with pytest.raises(ReplayRefused) as refused:
        await actions.replay(dead.dead_letter_id, by="root", parameters={"times": "many"})
    assert (refused.value.status, refused.value.code) == (422, "invalid_parameters")
    assert refused.value.details[0]["field"] == "parameters.times"
    record = await store.dead_letters.find_one({"_id": dead.dead_letter_id})
    assert record is not None
    assert record["state"] == "pending"

    outcome = await actions.replay(dead.dead_letter_id, by="root", parameters={"times": 0})
    assert outcome.outcome == "replayed"
    [sent] = await dispatches(connection, 1)
    assert sent.parameters == {"times": 0, "retryable": True}  # normalised by the type
    [event] = await outbox_events(store, dead.task_id, "task.replayed")
    assert event["data"]["parameters"] == {"times": 0, "retryable": True}


async def test_a_task_that_dies_again_after_a_replay_is_linked_and_the_limit_stops_it(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    # replay_limit is 2 in these tests
    dead = await dead_task(store, publisher, connection)
    ids = [dead.dead_letter_id]
    for _ in range(2):
        await actions.replay(ids[-1], by="root")
        [again] = await dispatches(connection, 1)
        died = await kill_attempt(store, publisher, again)
        ids.append(died.dead_letter_id)
        await parked(store, died.dead_letter_id)
    records = [await store.dead_letters.find_one({"_id": i}) for i in ids]
    assert [r["_id"] for r in records if r] == [f"{dead.task_id}:{n}" for n in (1, 2, 3)]
    assert [(r["replay_of"], r["generation"]) for r in records if r] == [
        (None, 0),
        (ids[0], 1),
        (ids[1], 2),
    ]
    refusals = metric("taskcore_dead_letter_replays_refused_total", code="replay_limit")
    with pytest.raises(ReplayRefused) as refused:
        await actions.replay(ids[-1], by="root")
    assert (refused.value.status, refused.value.code) == (409, "replay_limit")
    assert metric("taskcore_dead_letter_replays_refused_total", code="replay_limit") == refusals + 1
    assert await queue_depth(connection, PAID) == 0


async def test_a_poison_message_is_republished_to_where_it_was_going_and_a_new_death_links_back(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    scratch = await (await connection.channel()).declare_queue(exclusive=True)
    await publisher.publish("", scratch.name, message(b"<xml/>", message_id="poison-1"))
    incoming = await scratch.get(timeout=5)
    await dead_letter_poison(
        publisher, incoming, reason="malformed", error=ValueError("xml"), source="test"
    )
    await parked(store, "poison-1")
    # When it is replayed
    outcome = await actions.replay("poison-1", by="root")
    assert outcome.outcome == "replayed"
    # then the original body arrives where it was going, marked as a replay, clean of its death
    again = await scratch.get(timeout=5)
    assert again.body == b"<xml/>"
    headers: dict[str, Any] = dict(again.headers or {})
    assert headers["x-replay-of"] == "poison-1"
    assert not [k for k in headers if k.startswith(("x-dead-", "x-death"))]
    assert again.message_id == "poison-1~1"
    # and when it dies again it is a new dead letter that names the first
    await dead_letter_poison(
        publisher, again, reason="malformed", error=ValueError("xml"), source="test"
    )
    second = await parked(store, "poison-1~1")
    assert (second["replay_of"], second["generation"]) == ("poison-1", 1)
    with pytest.raises(ReplayRefused) as edited:
        await actions.replay("poison-1~1", by="root", parameters={"x": 1})
    assert edited.value.code == "parameters_not_editable"


async def test_a_poison_message_with_no_known_destination_is_refused_clearly(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    await publisher.publish(
        "tasks.dlx",
        "dead",
        message(b"?", headers={"x-dead-reason": "malformed"}, message_id="nowhere-1"),
    )
    await parked(store, "nowhere-1")
    with pytest.raises(ReplayRefused) as refused:
        await actions.replay("nowhere-1", by="root")
    assert (refused.value.status, refused.value.code) == (409, "not_replayable")


async def test_discarding_keeps_the_record_records_an_event_and_blocks_replay(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = await dead_task(store, publisher, connection)
    labels = {"reason": "non_retryable", "task_type": "diag.fail"}
    discards_before = metric("taskcore_dead_letters_discarded_total", **labels)
    first = await actions.discard(dead.dead_letter_id, by="root", note="known bad input")
    second = await actions.discard(dead.dead_letter_id, by="root")
    assert (first.outcome, second.outcome) == ("discarded", "already_discarded")
    assert first.record["discard"]["note"] == "known bad input"
    assert metric("taskcore_dead_letters_discarded_total", **labels) == discards_before + 1
    [event] = await outbox_events(store, dead.task_id, "task.discarded")
    assert event["data"]["dead_letter_id"] == dead.dead_letter_id
    with pytest.raises(ReplayRefused) as refused:
        await actions.replay(dead.dead_letter_id, by="root")
    assert refused.value.code == "discarded"
    assert await queue_depth(connection, PAID) == 0


async def test_a_task_message_rabbitmq_dropped_before_it_ran_is_resent_as_the_same_dispatch(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    from taskcore.submission import NewTask, submit_tasks

    await submit_tasks(
        store, publisher, [NewTask(user_id="alice", task_type="diag.noop", parameters={})]
    )
    channel = await connection.channel()
    queue = await channel.get_queue(PAID, ensure=False)
    dispatch = await queue.get(timeout=5)
    await dispatch.nack(requeue=False)  # RabbitMQ dead-letters it: the task never ran
    record = await parked(store, dispatch.message_id or "")
    assert record["reason"] == "rejected"
    outcome = await actions.replay(record["_id"], by="root")
    assert outcome.record["replay"]["mode"] == "resend"
    [sent] = await take(connection, PAID, 1)
    assert sent.message_id == dispatch.message_id  # the same dispatch, which the executor runs once
