"""Anyone who can publish to ``tasks.dlx`` chooses a dead letter's headers. Whatever they
are (an ``x-death`` that is not a list, entries that are not tables, fields of the wrong
type, headers made huge or deep), the parker parks the message once with what it can
read and acks it: nothing comes back forever. Real RabbitMQ, real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher, message
from taskcore.messages.envelope import TaskMessage
from taskcore.messages.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE
from taskcore.registry import TaskTypeRegistry
from taskcore.testing import wait_for_async
from taskcore_api.deadletters.records import MAX_DEATHS, MAX_HEADERS_JSON
from taskcore_api.deadletters.settings import DeadLetterSettings
from taskcore_api.deadletters.worker import DeadLetterWorker

from tests.integration.deadletters.conftest import parked, queue_depth

WELL_FORMED_DEATH = {
    "reason": "expired",
    "queue": "tasks.free.queue",
    "exchange": "tasks.exchange",
    "routing-keys": ["free"],
    "count": 2,
    "time": datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth):
        value = {"in": value}
    return value


HOSTILE_HEADERS: dict[str, dict[str, Any]] = {
    "x-death-a-string": {"x-death": "rejected"},
    "x-death-a-number": {"x-death": 5},
    "x-death-a-table": {"x-death": {"reason": "expired"}},
    "entries-not-tables": {"x-death": [1, "two", [3], None]},
    "fields-of-the-wrong-type": {
        "x-death": [
            {
                "reason": {"a": 1},
                "queue": 3,
                "exchange": ["tasks.exchange"],
                "routing-keys": 7,
                "count": "many",
                "time": "yesterday",
            }
        ]
    },
    "routing-keys-a-table": {"x-death": [{**WELL_FORMED_DEATH, "routing-keys": {"0": "free"}}]},
    "count-a-huge-number-or-a-bool": {
        "x-death": [{**WELL_FORMED_DEATH, "count": 2**63 - 1}, {"count": True}]
    },
    "hundreds-of-deaths-near-the-frame-size": {
        "x-death": [dict(WELL_FORMED_DEATH) for _ in range(800)]
    },
    "headers-nested-deep": {"x-custom": nested(60), "x-death": [WELL_FORMED_DEATH]},
    "our-own-headers-of-the-wrong-type": {
        "x-dead-reason": {"why": "table"},
        "x-task-id": [1, 2],
        "x-dispatch": "1" * 5000,
        "x-replay-of": 12,
    },
}


@pytest.fixture
async def dead_letter_worker(
    store: Store,
    connection: AbstractRobustConnection,
    publisher: Publisher,
    registry: TaskTypeRegistry,
    dl_settings: DeadLetterSettings,
) -> AsyncIterator[DeadLetterWorker]:
    worker = DeadLetterWorker(store, connection, publisher, registry, dl_settings, 64 * 1024)
    await worker.start()
    yield worker
    await worker.stop()


async def dead_letter(
    publisher: Publisher, message_id: str, headers: dict[str, Any], body: bytes
) -> None:
    await publisher.publish(
        DEAD_LETTER_EXCHANGE, "dead", message(body, headers=headers, message_id=message_id)
    )


async def parked_and_acked(
    store: Store, connection: AbstractRobustConnection, message_id: str
) -> Doc:
    record = await parked(store, message_id)

    async def acked() -> bool:
        return await queue_depth(connection, DEAD_LETTER_QUEUE) == 0

    await wait_for_async(acked, timeout=10, message="the dead-letter queue empty (acked)")
    return record


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
async def test_a_dead_letter_with_hostile_headers_is_parked_once_and_acked(
    case: str,
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    dead_letter_worker: DeadLetterWorker,
) -> None:
    message_id = f"hostile-{case}"
    await dead_letter(publisher, message_id, HOSTILE_HEADERS[case], b'{"payload": 1}')

    record = await parked_and_acked(store, connection, message_id)

    assert record["body_text"] == '{"payload": 1}'
    assert record["state"] == "pending"
    assert isinstance(record["reason"], str)
    assert len(record["death_history"]) <= MAX_DEATHS + 1
    assert len(record["headers_json"]) <= MAX_HEADERS_JSON
    for death in record["death_history"]:
        assert isinstance(death.get("count", 1), int)
    # Parked once: a second copy of the same message is recognised, not parked again
    await dead_letter(publisher, message_id, HOSTILE_HEADERS[case], b'{"payload": 1}')
    await parked_and_acked(store, connection, message_id)
    assert await store.dead_letters.count_documents({}) == 1


async def test_what_can_be_read_from_a_half_broken_death_history_is_kept(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    dead_letter_worker: DeadLetterWorker,
) -> None:
    headers = {"x-death": [WELL_FORMED_DEATH, "junk", {"count": "many", "queue": 9}]}
    await dead_letter(publisher, "half-broken", headers, b"{}")

    record = await parked_and_acked(store, connection, "half-broken")

    assert record["reason"] == "expired"
    assert record["original"] == {"exchange": "", "routing_key": ""}  # the last entry's
    first, second = record["death_history"]
    assert first["queue"] == "tasks.free.queue"
    assert first["routing_keys"] == ["free"]
    assert first["count"] == 2
    assert first["time"] == "2026-12-01T12:00:00+00:00"
    assert (second["queue"], second["count"]) == (None, 1)


async def test_a_dead_letter_over_the_size_limit_is_parked_unparsed_as_too_large(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    dead_letter_worker: DeadLetterWorker,
) -> None:
    # A readable task message, but larger than the 64 KiB this parker accepts
    task = TaskMessage(
        task_id="t-big",
        task_type="diag.noop",
        user_id="alice",
        tier="paid",
        priority=0,
        parameters={"blob": "x" * 100_000},
        dispatch=1,
    )
    await dead_letter(publisher, "too-big", {}, task.model_dump_json().encode())

    record = await parked_and_acked(store, connection, "too-big")

    assert record["reason"] == "too_large"
    assert record["is_task_message"] is False  # its body was not parsed
    assert record["body_size"] > 100_000
