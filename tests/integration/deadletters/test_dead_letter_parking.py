"""Every way a message can die ends as an inspectable record, parked once, acked only
after the record is durable. Real RabbitMQ (a fresh vhost), real store."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import uuid

import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import DeliveryError
from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.adapters.rabbit import Publisher, message
from taskcore.messages.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, task_queue_name
from taskcore.poison import dead_letter_poison
from taskcore.registry import TaskTypeRegistry
from taskcore.standin import free_port
from taskcore.testing import wait_for_async
from taskcore_api.deadletters.parker import DeadLetterParker
from taskcore_api.deadletters.settings import DeadLetterSettings
from taskcore_api.deadletters.worker import DeadLetterWorker

from tests.integration.deadletters.conftest import dead_task, parked, queue_depth


def parked_count(reason: str, task_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskcore_dead_letters_parked_total", {"reason": reason, "task_type": task_type}
    )
    return value or 0.0


async def test_a_task_the_executor_gave_up_on_is_parked_with_error_traceback_and_task(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    worker: DeadLetterWorker,
) -> None:
    before = parked_count("non_retryable", "diag.fail")
    # Given a task the executor's own outcome code dead-lettered
    dead = await dead_task(store, publisher, connection)
    # then its record carries the reason, the error with its traceback and the task
    record = await parked(store, dead.dead_letter_id)
    assert record["reason"] == "non_retryable"
    assert record["source"] == "executor"
    assert (record["task_id"], record["dispatch"]) == (dead.task_id, 1)
    assert (record["task_type"], record["user_id"]) == ("diag.fail", "alice")
    assert record["error"]["type"] == "NonRetryableError"
    assert record["error"]["message"] == "boom at dispatch 1"
    assert "Traceback (most recent call last)" in record["error"]["traceback"]
    assert record["state"] == "pending"
    # and its id is the one the task's dead_lettered event names
    task = await store.tasks.find_one({"_id": dead.task_id})
    assert task is not None
    events = [e["event"] for e in task["outbox"].values()]
    assert [e["data"]["dead_letter_id"] for e in events if e["type"] == "task.dead_lettered"] == [
        record["_id"]
    ]
    assert parked_count("non_retryable", "diag.fail") == before + 1


async def test_a_poison_message_is_parked_with_its_body_headers_and_destination(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    worker: DeadLetterWorker,
) -> None:
    # Given an unreadable message on a task queue, dead-lettered by the shared poison code
    await publisher.publish(
        "",
        task_queue_name("paid"),
        message(b"{not json", headers={"x-trace": "abc"}, message_id="p-1"),
    )
    [incoming] = await take_unacked(connection, task_queue_name("paid"))
    await dead_letter_poison(
        publisher, incoming, reason="malformed", error=ValueError("not JSON"), source="executor"
    )
    record = await parked(store, "p-1")
    assert record["reason"] == "malformed"
    assert record["error"] == {"type": "ValueError", "message": "not JSON", "traceback": None}
    assert record["body_text"] == "{not json"
    assert record["original"] == {"exchange": "", "routing_key": task_queue_name("paid")}
    assert record["task_id"] is None
    assert '"x-trace": "abc"' in record["headers_json"]


async def take_unacked(connection: AbstractRobustConnection, queue: str) -> list[object]:
    channel = await connection.channel()
    q = await channel.get_queue(queue, ensure=False)

    async def one() -> object | None:
        return await q.get(fail=False)

    return [await wait_for_async(one, timeout=10, message=f"a message on {queue}")]


async def test_messages_rabbitmq_rejects_expires_or_refuses_by_a_limit_are_parked(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    worker: DeadLetterWorker,
    vhost: str,
) -> None:
    paid, free = task_queue_name("paid"), task_queue_name("free")
    # rejected: a consumer nacks without requeue
    await publisher.publish("", paid, message(b'{"a": 1}', message_id="rej-1"))
    [incoming] = await take_unacked(connection, paid)
    await incoming.nack(requeue=False)  # type: ignore[attr-defined]
    # expired: nobody consumes it before its TTL
    await publisher.publish("", free, message(b'{"a": 2}', message_id="exp-1", expiration=0.05))
    rejected = await parked(store, "rej-1")
    expired = await parked(store, "exp-1")
    # over a limit: the queue's max-length refuses the publish and dead-letters it
    await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "set_policy", "-p", vhost, "--apply-to", "queues", "limit",
         r"^tasks\.free\.queue$", '{"max-length": 1, "overflow": "reject-publish-dlx"}'],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    await publisher.publish("", free, message(b'{"a": 3}', message_id="fits-1"))
    with pytest.raises(DeliveryError):  # the broker nacks the publisher, then dead-letters it
        await publisher.publish("", free, message(b'{"a": 4}', message_id="limit-1"))
    limited = await parked(store, "limit-1")

    assert (rejected["reason"], expired["reason"], limited["reason"]) == (
        "rejected",
        "expired",
        "rejected_by_limit",
    )
    assert rejected["death_history"][0]["queue"] == paid
    assert expired["death_history"][0]["reason"] == "expired"
    assert limited["death_history"][0] | {"time": None} == {
        "by": "rabbitmq",
        "reason": "maxlen",
        "queue": free,
        "exchange": "",
        "routing_keys": [free],
        "count": 1,
        "time": None,
    }
    assert limited["original"] == {"exchange": "", "routing_key": free}
    assert "maxlen" in limited["error"]["message"]


async def test_a_dead_letter_delivered_twice_is_parked_once(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    worker: DeadLetterWorker,
) -> None:
    before = parked_count("malformed", "unregistered")
    headers = {"x-dead-reason": "malformed", "x-dead-error": "ValueError: no"}
    twice = message(b"\x00\xffbinary", headers=headers, message_id=f"twice-{uuid.uuid4().hex[:6]}")
    once = message(b"{}", headers=headers, message_id=f"once-{uuid.uuid4().hex[:6]}")
    # Given the same dead letter published twice (the outbox relay re-sends, say)
    await publisher.publish(DEAD_LETTER_EXCHANGE, "dead", twice)
    await publisher.publish(DEAD_LETTER_EXCHANGE, "dead", twice)
    await publisher.publish(DEAD_LETTER_EXCHANGE, "dead", once)

    async def drained() -> bool:
        return await queue_depth(connection, DEAD_LETTER_QUEUE) == 0 and (
            await store.dead_letters.count_documents({"_id": once.message_id}) == 1
        )

    await wait_for_async(drained, timeout=10, message="every copy handled")
    # then it is parked once, and counted once
    records = await store.dead_letters.find({}).to_list(None)
    assert sorted(r["_id"] for r in records) == sorted([twice.message_id, once.message_id])
    binary = next(r for r in records if r["_id"] == twice.message_id)
    assert binary["body_encoding"] == "base64"
    assert parked_count("malformed", "unregistered") == before + 2


async def test_a_dead_letter_the_store_cannot_take_stays_queued_until_it_can(
    store: Store,
    connection: AbstractRobustConnection,
    publisher: Publisher,
    registry: TaskTypeRegistry,
    dl_settings: DeadLetterSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a parker whose store does not answer
    dead_store = Store(
        connect_mongo(f"mongodb://127.0.0.1:{free_port()}/", timeout_ms=200), "nowhere"
    )
    broken = DeadLetterParker(dead_store, connection, registry, dl_settings)
    await broken.start()
    caplog.set_level(logging.ERROR, logger="taskcore_api.deadletters.parker")
    await publisher.publish(
        DEAD_LETTER_EXCHANGE,
        "dead",
        message(b"{}", headers={"x-dead-reason": "malformed"}, message_id="kept-1"),
    )

    # when it fails to park a dead letter
    async def failed() -> bool:
        return any("Parking a dead letter failed" in r.getMessage() for r in caplog.records)

    await wait_for_async(failed, timeout=15, message="the broken parker's failure")
    await broken.stop()
    await dead_store.close()
    # then the message was not acked: a working parker parks it
    good = DeadLetterWorker(store, connection, publisher, registry, dl_settings)
    await good.start()
    try:
        record = await parked(store, "kept-1")
    finally:
        await good.stop()
    assert record["reason"] == "malformed"
