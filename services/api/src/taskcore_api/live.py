"""Live task changes for this API process: one subscription, fanned out in memory.

The process has ONE exclusive, auto-delete queue on ``tasks.events.exchange`` (the
committed CloudEvents the bridge publishes) and hands each event to the in-process
followers of its task: SSE streams and ``?wait=`` submissions. So 200 open streams cost
one broker consumer and no store polling. The events are committed, so a read of the
task after one sees at least that state.

The queue is bound to the exchange only while someone follows a task (and for a while
after the last one left): a process nobody follows receives none of the system's events.
Binding takes a round trip, so the followers present when it completes are told to
``Resync``: whatever was committed before the binding they read from the store.

Delivery to a follower is best effort by design: a follower that falls behind, or a
broker reconnection (events published meanwhile were missed), gets a ``Resync`` marker
instead, and recovers what it missed from the event log or the task document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from taskcore.domain.clock import as_utc
from taskcore.domain.status import TaskStatus
from taskcore.messages.cloudevents import TASK_FIELDS, TYPE_PREFIX
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE

log = logging.getLogger(__name__)

# Buffered events per follower before it is told to resync instead.
MAX_BUFFERED = 1000


@dataclass(frozen=True)
class LiveEvent:
    """A committed event and the task's status right after it."""

    event_id: str
    task_id: str
    sequence: int
    type: str  # "task.completed"
    occurred_at: datetime
    status: TaskStatus
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.status.is_terminal


class Resync:
    """Events may have been missed: recover from the log or the task document."""


class Closed:
    """The process is shutting down: end the stream or the wait."""


Notice = LiveEvent | Resync | Closed


@dataclass(eq=False)
class Follower:
    task_id: str
    queue: asyncio.Queue[Notice] = field(
        default_factory=lambda: asyncio.Queue(maxsize=MAX_BUFFERED)
    )

    def notify(self, notice: Notice) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:
            # Too slow to keep up: drop the backlog and let it catch up from the store.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(notice if isinstance(notice, Closed) else Resync())

    async def next(self, within_s: float | None = None) -> Notice | None:
        """The next notice, or None if none comes within ``within_s`` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), within_s)
        except TimeoutError:
            return None


def parse_cloudevent(body: bytes) -> LiveEvent | None:
    """A taskcore CloudEvent (structured JSON mode) as a ``LiveEvent``; None if it is not."""
    try:
        raw = json.loads(body)
        data = dict(raw["data"])
        type_ = str(raw["type"])
        if not type_.startswith(TYPE_PREFIX):
            return None
        payload = {k: v for k, v in data.items() if k not in (*TASK_FIELDS, "sequence")}
        return LiveEvent(
            event_id=str(raw["id"]),
            task_id=str(raw["subject"]),
            sequence=int(data["sequence"]),
            type="task." + type_.removeprefix(TYPE_PREFIX),
            occurred_at=as_utc(datetime.fromisoformat(str(raw["time"]))),
            status=TaskStatus(data["status"]),
            data=payload,
        )
    except (ValueError, KeyError, TypeError):
        return None


class LiveEvents:
    """The process's one subscription and its followers, keyed by task id.

    Until ``start`` it delivers nothing, which is harmless: waits time out and streams
    show the state they read.
    """

    def __init__(self, *, unbind_after_s: float = 30.0) -> None:
        # Weak: a follower whose stream was dropped without cleaning up just goes away.
        self._followers: dict[str, weakref.WeakSet[Follower]] = defaultdict(weakref.WeakSet)
        self._closed = False
        self._unbind_after_s = unbind_after_s
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._bound = False
        self._changing: asyncio.Task[None] | None = None
        self._unbind_timer: asyncio.TimerHandle | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        self._queue = await channel.declare_queue(
            f"taskcore.api.live.{uuid.uuid4().hex[:12]}", exclusive=True, auto_delete=True
        )
        self._exchange = await channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE, ensure=False)
        await self._queue.consume(self._on_message, no_ack=True)
        connection.reconnect_callbacks.add(self._on_reconnect)
        if self._followers:
            self._want_binding()

    @property
    def bound(self) -> bool:
        return self._bound

    def _want_binding(self) -> None:
        if self._unbind_timer is not None:
            self._unbind_timer.cancel()
            self._unbind_timer = None
        if not self._bound and self._changing is None and self._queue is not None:
            self._changing = asyncio.get_running_loop().create_task(self._bind())

    async def _bind(self) -> None:
        assert self._queue is not None
        assert self._exchange is not None
        try:
            await self._queue.bind(self._exchange)
            self._bound = True
        except Exception:
            log.exception("Could not bind the live-events queue; followers resync instead.")
        finally:
            self._changing = None
        self._broadcast(Resync())  # what was committed before the binding is in the store
        if not self.follower_count:
            self._maybe_unbind()

    def _maybe_unbind(self) -> None:
        if self._bound and self._unbind_timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._unbind_timer = loop.call_later(self._unbind_after_s, self._unbind_if_idle)

    def _unbind_if_idle(self) -> None:
        self._unbind_timer = None
        if self.follower_count or not self._bound or self._changing is not None:
            return
        self._changing = asyncio.get_running_loop().create_task(self._unbind())

    async def _unbind(self) -> None:
        assert self._queue is not None
        assert self._exchange is not None
        try:
            await self._queue.unbind(self._exchange)
            self._bound = False
        except Exception:
            log.warning("Could not unbind the live-events queue; it stays bound.", exc_info=True)
        finally:
            self._changing = None
        if self.follower_count:
            self._want_binding()

    @property
    def follower_count(self) -> int:
        return sum(len(f) for f in self._followers.values())

    def subscribe(self, task_id: str) -> Follower:
        """Receive the task's events from now on, until ``unsubscribe``."""
        follower = Follower(task_id)
        if self._closed:
            follower.notify(Closed())
        self._followers[task_id].add(follower)
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to bind yet
            self._want_binding()
        return follower

    def unsubscribe(self, follower: Follower) -> None:
        followers = self._followers.get(follower.task_id)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[follower.task_id]
        if not self._followers:
            with contextlib.suppress(RuntimeError):
                self._maybe_unbind()

    @contextlib.contextmanager
    def follow(self, task_id: str) -> Iterator[Follower]:
        follower = self.subscribe(task_id)
        try:
            yield follower
        finally:
            self.unsubscribe(follower)

    def publish_locally(self, event: LiveEvent) -> None:
        followers = self._followers.get(event.task_id)
        if followers is None:
            return
        if not followers:
            del self._followers[event.task_id]
        for follower in list(followers):
            follower.notify(event)

    def close(self) -> None:
        """End every stream and wait (shutdown)."""
        self._closed = True
        self._broadcast(Closed())

    def _broadcast(self, notice: Notice) -> None:
        for followers in list(self._followers.values()):
            for follower in list(followers):
                follower.notify(notice)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # The bridge sets correlation_id to the task id: most events have no follower
        # here, and are skipped without parsing.
        if message.correlation_id is not None and message.correlation_id not in self._followers:
            return
        event = parse_cloudevent(message.body)
        if event is None:
            log.warning(
                "Ignored an event on %s that is not a taskcore CloudEvent.",
                EXTERNAL_EVENTS_EXCHANGE,
            )
            return
        self.publish_locally(event)

    def _on_reconnect(self, *args: Any) -> None:
        log.info("Reconnected to the broker; live followers will resync from the store.")
        self._broadcast(Resync())
