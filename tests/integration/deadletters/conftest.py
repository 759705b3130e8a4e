"""Fixtures for the dead-letter integration tests: the real broker (a fresh vhost), the
real store (a fresh database), the parker running in-process, and tasks made dead by
the executor's own claim and outcome code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.envelope import TaskMessage
from taskcore.messages.topology import task_queue_name
from taskcore.outbox import deliver
from taskcore.plugin import NonRetryableError
from taskcore.registry import TaskTypeRegistry, load_registry
from taskcore.settings import Settings
from taskcore.submission import NewTask, submit_tasks
from taskcore.taskdoc import Ending, Finish
from taskcore.testing import wait_for_async
from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.settings import DeadLetterSettings
from taskcore_api.deadletters.worker import DeadLetterWorker
from taskcore_executor.outcomes import Dead, DeadReason, ErrorInfo, Sequencer, outcome_entries

NODE = "test-node"


@pytest.fixture(scope="session")
def registry() -> TaskTypeRegistry:
    return load_registry(Settings())


@pytest.fixture
def dl_settings() -> DeadLetterSettings:
    return DeadLetterSettings(
        replay_limit=2,
        replay_lease_seconds=1.0,
        job_lease_seconds=1.0,
        sweep_interval_seconds=0.1,
    )


@pytest.fixture
async def worker(
    store: Store,
    connection: AbstractRobustConnection,
    publisher: Publisher,
    registry: TaskTypeRegistry,
    dl_settings: DeadLetterSettings,
) -> AsyncIterator[DeadLetterWorker]:
    w = DeadLetterWorker(store, connection, publisher, registry, dl_settings)
    await w.start()
    yield w
    await w.stop()


@pytest.fixture
def actions(worker: DeadLetterWorker) -> DeadLetterActions:
    return worker.actions


async def parked(store: Store, record_id: str) -> Doc:
    async def probe() -> Doc | None:
        return await store.dead_letters.find_one({"_id": record_id})

    return await wait_for_async(probe, timeout=10, message=f"dead letter {record_id} parked")


async def take(
    connection: AbstractRobustConnection, queue: str, count: int
) -> list[AbstractIncomingMessage]:
    """Exactly ``count`` messages off ``queue`` (acked), waiting for each with a deadline."""
    channel = await connection.channel()
    q = await channel.get_queue(queue, ensure=False)
    taken: list[AbstractIncomingMessage] = []

    async def one_more() -> bool:
        message = await q.get(fail=False, no_ack=True)
        if message is not None:
            taken.append(message)
        return len(taken) >= count

    await wait_for_async(one_more, timeout=10, message=f"{count} messages on {queue}")
    return taken


async def queue_depth(connection: AbstractRobustConnection, queue: str) -> int:
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    depth = declared.declaration_result.message_count
    await channel.close()
    return int(depth or 0)


@dataclass
class DeadTask:
    task_id: str
    message: TaskMessage

    @property
    def dead_letter_id(self) -> str:
        return f"{self.task_id}:{self.message.dispatch}"


async def submit(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    *,
    task_type: str = "diag.fail",
    parameters: dict[str, Any] | None = None,
    user_id: str = "alice",
) -> TaskMessage:
    """A stored task and its first dispatch, taken off the queue as an executor would."""
    new = NewTask(
        user_id=user_id,
        task_type=task_type,
        parameters=parameters if parameters is not None else {"times": 1, "retryable": False},
    )
    await submit_tasks(store, publisher, [new])
    [message] = await take(connection, task_queue_name("paid"), 1)
    return TaskMessage.model_validate_json(message.body)


async def kill_attempt(store: Store, publisher: Publisher, msg: TaskMessage) -> DeadTask:
    """Run ``msg``'s dispatch to a non-retryable death with the executor's own claim,
    outcome and finish code, publishing the dead letter as the executor does."""
    claim = await store.documents.claim(msg.task_id, msg.dispatch, NODE, 30.0)
    try:
        raise NonRetryableError(f"boom at dispatch {msg.dispatch}")
    except NonRetryableError as exc:
        outcome = Dead(DeadReason.NON_RETRYABLE, ErrorInfo.of(exc, False))
    seq = Sequencer(msg.task_id, claim.first_sequence, claim.last_sequence)
    entries = outcome_entries(outcome, msg, seq, None)
    [finished] = await store.documents.finish_many(NODE, [Finish(claim, Ending.DONE, entries)])
    assert finished
    await deliver(publisher, entries)
    return DeadTask(msg.task_id, msg)


async def dead_task(
    store: Store, publisher: Publisher, connection: AbstractRobustConnection, **kwargs: Any
) -> DeadTask:
    msg = await submit(store, publisher, connection, **kwargs)
    dead = await kill_attempt(store, publisher, msg)
    await parked(store, dead.dead_letter_id)
    return dead


async def dispatches(connection: AbstractRobustConnection, count: int) -> list[TaskMessage]:
    messages = await take(connection, task_queue_name("paid"), count)
    return [TaskMessage.model_validate_json(m.body) for m in messages]


async def outbox_events(store: Store, task_id: str, type_: str) -> list[Doc]:
    doc = await store.tasks.find_one({"_id": task_id})
    assert doc is not None
    return [e["event"] for e in (doc.get("outbox") or {}).values() if e["event"]["type"] == type_]


def amqp(body: bytes, **kwargs: Any) -> aio_pika.Message:
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **kwargs)
