"""The process's one subscription to committed events, on the real broker."""

from __future__ import annotations

from datetime import UTC, datetime

import aio_pika
from taskcore.adapters.rabbit import connect_broker
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore.messages.cloudevents import to_amqp_body, to_cloudevent
from taskcore.messages.envelope import CommittedEvent
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE, declare_topology
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_api.live import MAX_BUFFERED, LiveEvent, LiveEvents, Resync


def committed(task_id: str, sequence: int, type_: EventType, status: str) -> CommittedEvent:
    event = TaskEvent(
        event_id=f"{task_id}:{sequence}",
        task_id=task_id,
        sequence=sequence,
        type=type_,
        occurred_at=datetime.now(UTC),
        data={"progress": {"done": sequence}} if type_ is EventType.PROGRESS else {},
    )
    task = {"task_type": "diag.noop", "user_id": "alice", "status": status}
    return CommittedEvent(event=event, task=task)


async def publish_as_the_bridge(
    channel: aio_pika.abc.AbstractChannel, item: CommittedEvent
) -> None:
    body, content_type = to_amqp_body(to_cloudevent(item))
    exchange = await channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(body, content_type=content_type, correlation_id=item.event.task_id),
        routing_key="",
    )


async def test_followers_get_their_tasks_committed_events_and_only_those(
    settings: Settings,
) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="test-live")
    try:
        channel = await connection.channel()
        await declare_topology(channel)
        live = LiveEvents()
        await live.start(connection)
        with live.follow("task-a") as a, live.follow("task-a") as a2, live.follow("task-b") as b:
            # Binding on the first follower: each is told to resync what came before
            first = [await f.next(5) for f in (a, a2, b)]
            assert all(isinstance(notice, Resync) for notice in first)
            assert live.bound
            await publish_as_the_bridge(
                channel, committed("task-c", 1, EventType.STARTED, "RUNNING")
            )
            await publish_as_the_bridge(
                channel, committed("task-a", 7, EventType.PROGRESS, "RUNNING")
            )
            await publish_as_the_bridge(
                channel, committed("task-a", 9, EventType.COMPLETED, "COMPLETED")
            )
            got = [await a.next(5), await a.next(5)]
            again = [await a2.next(5), await a2.next(5)]
            nothing = await b.next(0.3)
        assert live.follower_count == 0
    finally:
        await connection.close()
    assert all(isinstance(e, LiveEvent) for e in got)
    events = [e for e in got if isinstance(e, LiveEvent)]
    assert [(e.sequence, e.type, e.status.value) for e in events] == [
        (7, "task.progress", "RUNNING"),
        (9, "task.completed", "COMPLETED"),
    ]
    assert events[0].data == {"progress": {"done": 7}}  # the payload, without task fields
    assert events[1].terminal
    assert again == got
    assert nothing is None


async def test_a_follower_that_falls_behind_is_told_to_resync_instead() -> None:
    live = LiveEvents()
    with live.follow("task-a") as follower:
        for sequence in range(1, MAX_BUFFERED + 2):
            live.publish_locally(
                LiveEvent(
                    event_id=f"task-a:{sequence}",
                    task_id="task-a",
                    sequence=sequence,
                    type="task.progress",
                    occurred_at=datetime.now(UTC),
                    status=TaskStatus.RUNNING,
                    data={},
                )
            )
        first = await follower.next(1)
        rest = await follower.next(0.1)
    assert isinstance(first, Resync)
    assert rest is None


async def test_the_queue_is_bound_only_while_someone_follows(settings: Settings) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="test-live-binding")
    try:
        channel = await connection.channel()
        await declare_topology(channel)
        live = LiveEvents(unbind_after_s=0.2)
        await live.start(connection)
        # Nobody follows: the process receives none of the system's events
        assert not live.bound
        with live.follow("task-a") as a:
            assert isinstance(await a.next(5), Resync)
            assert live.bound
        # and a while after the last follower left, it stops receiving them again
        await wait_for_async(lambda: _unbound(live), timeout=5, message="unbound")
        # a new follower binds it again
        with live.follow("task-a") as again:
            assert isinstance(await again.next(5), Resync)
            await publish_as_the_bridge(
                channel, committed("task-a", 3, EventType.STARTED, "RUNNING")
            )
            event = await again.next(5)
        assert isinstance(event, LiveEvent)
        assert event.sequence == 3
    finally:
        await connection.close()


async def _unbound(live: LiveEvents) -> bool:
    return not live.bound
