"""Delayed tasks over the real store and broker: nothing is sent before its time, each due
dispatch is sent once however many sweeps race, and a cancelled one is never sent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aio_pika.abc import AbstractIncomingMessage
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.cancellation import Canceller
from taskcore.due_dispatch import DueDispatcher
from taskcore.messages.topology import RETRY_EXCHANGE, task_queue_name
from taskcore.submission import NewTask, new_task_document, submit_tasks
from taskcore.taskdoc import ExecState

from tests.integration.api.support import queue_messages

PAID = task_queue_name("paid")


def delayed(seconds: float, n: int = 0) -> NewTask:
    return NewTask(
        user_id="alice",
        task_type="diag.noop",
        parameters={},
        scheduled_for=datetime.now(UTC) + timedelta(seconds=seconds),
        task_id=f"delayed-{seconds}-{n}",
    )


async def dispatched(rabbitmq_url: str) -> list[AbstractIncomingMessage]:
    return await queue_messages(rabbitmq_url, PAID)


async def test_a_delay_no_queue_fits_waits_in_the_store_and_is_sent_once_when_due(
    store: Store, publisher: Publisher, rabbitmq_url: str
) -> None:
    # Given a task delayed by 7.3 s (no delay queue fits)
    [submitted] = await submit_tasks(store, publisher, [delayed(7.3)])
    state = ExecState.of(await store.documents.get(submitted.task.id) or {})
    assert state.due_ms is not None
    assert submitted.task.scheduled_for is not None
    sweeper = DueDispatcher(store.documents, publisher, interval_s=0.5)
    # When the sweep looks before its time, then at it, then again
    assert await sweeper.sweep() == 0
    assert await dispatched(rabbitmq_url) == []
    store.documents.clock = lambda: state.due_ms or 0
    assert await sweeper.sweep() == 1
    assert await sweeper.sweep() == 0
    # Then exactly one dispatch of it went out, and nothing waits any more
    [message] = await dispatched(rabbitmq_url)
    assert message.headers["x-task-id"] == submitted.task.id
    assert message.headers["x-dispatch"] == 1
    assert ExecState.of(await store.documents.get(submitted.task.id) or {}).due_ms is None


async def test_of_sweeps_racing_on_many_due_tasks_each_task_is_sent_once(
    store: Store, publisher: Publisher, rabbitmq_url: str
) -> None:
    await submit_tasks(store, publisher, [delayed(7.3, n) for n in range(60)])
    store.documents.clock = lambda: int(
        (datetime.now(UTC) + timedelta(seconds=8)).timestamp() * 1000
    )
    sweepers = [DueDispatcher(store.documents, publisher, interval_s=0.5) for _ in range(4)]
    sent = await asyncio.gather(*(s.sweep() for s in sweepers))
    assert sum(sent) == 60
    messages = await dispatched(rabbitmq_url)
    assert sorted(m.headers["x-task-id"] for m in messages) == sorted(
        f"delayed-7.3-{n}" for n in range(60)
    )


async def test_a_delayed_task_cancelled_before_its_time_is_never_sent(
    store: Store, publisher: Publisher, rabbitmq_url: str
) -> None:
    [submitted] = await submit_tasks(store, publisher, [delayed(7.3)])
    await Canceller(store, publisher).cancel(submitted.task.id, {"reason": "test"})
    store.documents.clock = lambda: int(
        (datetime.now(UTC) + timedelta(seconds=8)).timestamp() * 1000
    )
    assert await DueDispatcher(store.documents, publisher, interval_s=0.5).sweep() == 0
    assert await dispatched(rabbitmq_url) == []
    state = ExecState.of(await store.documents.get(submitted.task.id) or {})
    assert (state.finished, state.due_ms) == (True, None)


async def test_a_due_dispatch_whose_sender_died_is_sent_again_after_its_lease(
    store: Store, publisher: Publisher, rabbitmq_url: str
) -> None:
    [submitted] = await submit_tasks(store, publisher, [delayed(7.3)])
    due = ExecState.of(await store.documents.get(submitted.task.id) or {}).due_ms or 0
    store.documents.clock = lambda: due
    # A sweep takes it and dies before sending (nothing published, nothing settled)
    _, taken = await store.documents.take_due(10, resend_after_s=30)
    assert [d["_id"] for d in taken] == [submitted.task.id]
    sweeper = DueDispatcher(store.documents, publisher, interval_s=0.5)
    assert await sweeper.sweep() == 0, "taken by the dead sweep until its lease ends"
    store.documents.clock = lambda: due + 30_000
    assert await sweeper.sweep() == 1
    assert len(await dispatched(rabbitmq_url)) == 1


def test_a_delay_a_queue_fits_is_published_to_that_delay_queue() -> None:
    _, entry = new_task_document(delayed(5.0), datetime.now(UTC))
    assert entry.dispatch is not None
    assert (entry.dispatch.exchange, entry.dispatch.key()) == (RETRY_EXCHANGE, "5s.paid")
    doc, entry = new_task_document(delayed(7.3), datetime.now(UTC))
    assert entry.dispatch is None
    assert ExecState.of(doc).waits_in_store
