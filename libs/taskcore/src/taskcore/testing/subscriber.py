"""A test subscriber on tasks.events.exchange that parses every event with the SDK."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from cloudevents.core.v1.event import CloudEvent

from taskcore.messages.cloudevents import from_amqp_body
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE, declare_topology


class EventSubscriber:
    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[CloudEvent] = []
        self.errors: list[str] = []
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> EventSubscriber:
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._connection.channel()
        await declare_topology(self._channel)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await self._channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE)
        await queue.bind(exchange)
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = {k: str(v) for k, v in (message.headers or {}).items()}
        try:
            self.events.append(from_amqp_body(message.body, message.content_type, headers))
        except Exception as exc:  # recorded so tests can assert every event parsed
            self.errors.append(f"{exc!r}: {message.body[:200]!r}")

    def for_task(self, task_id: str) -> list[CloudEvent]:
        return [e for e in self.events if e.get_subject() == task_id]

    def types_for(self, task_id: str) -> list[str]:
        return [str(e.get_type()).removeprefix("io.taskcore.task.") for e in self.for_task(task_id)]

    def unique_by_id(self) -> dict[str, CloudEvent]:
        return {str(e.get_id()): e for e in self.events}

    def terminal_types(self) -> dict[str, set[str]]:
        terminal = {"completed", "failed", "cancelled", "dead_lettered", "completed_with_errors"}
        seen: dict[str, set[str]] = defaultdict(set)
        for e in self.unique_by_id().values():
            short = str(e.get_type()).removeprefix("io.taskcore.task.")
            if short in terminal:
                seen[str(e.get_subject())].add(short)
        return seen
