"""The README's "subscribe in five lines" example, run as its own program against the bridge.

Kept here verbatim (the README shows the same text), so the example cannot rot unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.cloudevents import is_external
from taskcore.messages.envelope import CommittedBatch
from taskcore.testing import wait_for_async

from .conftest import hand_off, running_bridge
from .test_bridge import every_kind_of_event

SUBSCRIBE_EXAMPLE = """\
import asyncio, os, aio_pika
from cloudevents.core.bindings import rabbitmq

async def follow_tasks(url: str) -> None:
    channel = await (await aio_pika.connect_robust(url)).channel()
    queue = await channel.declare_queue("my-app.task-events", durable=True)  # your own queue
    await queue.bind("tasks.events.exchange")
    async for msg in queue.iterator():
        async with msg.process():  # ack once handled; a redelivery keeps its id: dedupe on it
            event = rabbitmq.from_rabbitmq_event(
                rabbitmq.RabbitMQMessage({}, msg.content_type, msg.body))
            print(event.get_id(), event.get_type(), event.get_data()["status"], flush=True)

asyncio.run(follow_tasks(os.environ.get("RABBITMQ_URL", "amqp://guest:guest@localhost/")))
"""


async def test_the_subscribe_example_receives_every_external_event(
    rabbitmq_url: str, publisher: Publisher, connection: AbstractRobustConnection, tmp_path: Path
) -> None:
    script = tmp_path / "follow_tasks.py"
    script.write_text(SUBSCRIBE_EXAMPLE)
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env={**os.environ, "RABBITMQ_URL": rabbitmq_url},
        stdout=asyncio.subprocess.PIPE,
    )
    try:

        async def bound() -> bool:
            # A passive declare of a missing queue closes its channel: one channel a try.
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue("my-app.task-events", passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return False
            await channel.close()
            return (queue.declaration_result.consumer_count or 0) > 0

        await wait_for_async(bound, timeout=30, interval=0.1, message="the example consuming")
        items = [i for i in every_kind_of_event() if is_external(i.event.type)]
        async with running_bridge(rabbitmq_url):
            await hand_off(publisher, CommittedBatch(items=items))
            assert follower.stdout is not None
            lines = [
                (await asyncio.wait_for(follower.stdout.readline(), 30)).decode().split()
                for _ in items
            ]
    finally:
        follower.kill()
        await follower.wait()
    assert [line[0] for line in lines] == [i.event.event_id for i in items]
    assert [line[1] for line in lines] == [
        f"io.taskcore.task.{i.event.type.short_name}" for i in items
    ]
    assert [line[2] for line in lines] == [i.task["status"] for i in items]
