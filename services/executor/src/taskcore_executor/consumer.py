"""Consuming task messages: decode, claim, run, record the outcome, then ack.

A message is acked only after its outcome (the completion event, the retry message or the
dead letter) is recorded in the task's outbox and confirmed by the broker. A message that
cannot be read is dead-lettered with a reason and acked, without taking a slot: a poison
message never blocks or slows a queue. Whatever is redelivered, the conditional claim and
finish (``taskcore.taskdoc``) let one attempt per dispatch record an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import EventEmitter, Publisher
from taskcore.messages.envelope import TaskMessage
from taskcore.messages.topology import (
    CANCEL_ROUTING_KEY,
    INTERNAL_EVENTS_EXCHANGE,
    TIERS,
    task_queue_name,
)
from taskcore.registry import TaskTypeRegistry
from taskcore.settings import Settings

from taskcore_executor.attempt import AttemptRunner
from taskcore_executor.context import RunningTask
from taskcore_executor.decode import Malformed, dead_letter_unreadable, decode
from taskcore_executor.fair_share import FairShare
from taskcore_executor.heartbeat import Heartbeat
from taskcore_executor.priority_slots import PrioritySlots, SlotsClosed
from taskcore_executor.signals import RecentSignals

log = logging.getLogger(__name__)

# Free work gets this share of the slots and of the prefetch, in a pool of its own, so
# free load can never starve paid work (and paid load never stops free work entirely).
FREE_SHARE = 0.25
# After the grace period, how long handed-back attempts get to release their claims.
HAND_BACK_TIMEOUT_S = 5.0
# A handler that failed on the store or broker waits this long before its message is
# requeued, so a sick dependency is not hammered.
FAILURE_BACKOFF_S = 1.0


def tier_share(tier: str, total: int) -> int:
    return total if tier == "paid" else max(1, int(total * FREE_SHARE))


class Executor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        emitter: EventEmitter,
        registry: TaskTypeRegistry,
        node: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.connection = connection
        self.publisher = publisher
        self.node = node
        self.running: dict[str, RunningTask] = {}  # shared with the heartbeat
        self.heartbeat = Heartbeat(store, self.running, node, settings.lease_seconds)
        self.recent_cancels = RecentSignals()
        # CPU-bound task types run here, off the event loop.
        self.cpu_pool = ThreadPoolExecutor(
            max_workers=min(settings.concurrency, os.cpu_count() or 2),
            thread_name_prefix="taskcore-cpu",
        )
        self.attempts = AttemptRunner(
            settings=settings,
            store=store,
            publisher=publisher,
            emitter=emitter,
            registry=registry,
            node=node,
            running=self.running,
            recent_cancels=self.recent_cancels,
            cpu_pool=self.cpu_pool,
        )
        self._handlers: set[asyncio.Task[None]] = set()
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self._slots = {
            tier: PrioritySlots(tier_share(tier, settings.concurrency)) for tier in TIERS
        }
        self._fair = {
            tier: FairShare(
                tier_share(tier, settings.concurrency),
                share=settings.fair_share,
                long_s=settings.fair_share_long_seconds,
            )
            for tier in TIERS
        }
        self._stopping = False

    async def start(self) -> None:
        await self._listen_for_cancels()  # before any task can start
        for tier in TIERS:
            channel = await self.connection.channel()
            await channel.set_qos(prefetch_count=tier_share(tier, self.settings.prefetch))
            # ensure=True declares it passively, which registers it with the robust channel:
            # a queue fetched unchecked is not restored, nor its consumer, after a reconnect.
            queue = await channel.get_queue(task_queue_name(tier), ensure=True)
            tag = await queue.consume(self._on_message)
            self._channels.append(channel)
            self._consumers.append((queue, tag))

    async def _listen_for_cancels(self) -> None:
        channel = await self.connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(INTERNAL_EVENTS_EXCHANGE, ensure=False)
        await queue.bind(exchange, routing_key=CANCEL_ROUTING_KEY)
        await queue.consume(self._on_cancel, no_ack=True)
        self._channels.append(channel)

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            task_id = str(json.loads(message.body)["task_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("Ignored an unreadable cancel signal: %r", message.body[:200])
            return
        running = self.running.get(task_id)
        if running is not None:
            running.cancel()
        else:
            self.recent_cancels.remember(task_id)

    # ---- shutdown ----------------------------------------------------------------------

    async def stop_consuming(self) -> None:
        """Take no more work: cancel the consumers, and give back what waits for a slot."""
        self._stopping = True
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        self._consumers.clear()
        for slots in self._slots.values():
            slots.close()

    async def drain(self, grace_s: float) -> None:
        """Let running tasks finish within the grace period, then hand back the rest."""
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=grace_s)
        for running in list(self.running.values()):
            running.hand_back()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=HAND_BACK_TIMEOUT_S)
        for handler in list(self._handlers):
            handler.cancel()
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()
        self.cpu_pool.shutdown(wait=False, cancel_futures=True)

    # ---- one message -------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        handler = asyncio.create_task(self._handle(message))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            msg = decode(message, max_bytes=self.settings.max_message_bytes)
        except Malformed as bad:
            await self._park(message, bad)
            return
        fair = self._fair[msg.tier]
        try:
            started = await fair.admit(msg.user_id)
            if started is None:
                await self.attempts.redeliver_later(
                    message, msg, self.settings.fair_share_defer_seconds
                )
                return
            try:
                async with self._slots[msg.tier].hold(msg.priority):
                    if self._stopping:
                        raise SlotsClosed
                    await self.attempts.process(message, msg)
            finally:
                fair.release(msg.user_id, started)
        except SlotsClosed:
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)  # never claimed: another executor takes it
        except asyncio.CancelledError:
            await self._give_back(message, msg)
            raise
        except Exception:
            log.exception("Handling task %s failed; it goes back to the queue.", msg.task_id)
            await self._give_back(message, msg, backoff_s=FAILURE_BACKOFF_S)

    async def _park(self, message: AbstractIncomingMessage, bad: Malformed) -> None:
        try:
            await dead_letter_unreadable(self.publisher, message, bad.reason, bad)
        except Exception:
            log.exception("Could not dead-letter an unreadable message; it is requeued.")
            await asyncio.sleep(FAILURE_BACKOFF_S)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)

    async def _give_back(
        self, message: AbstractIncomingMessage, msg: TaskMessage, backoff_s: float = 0.0
    ) -> None:
        """Release this executor's claim (if any) and requeue the message, best effort."""
        with contextlib.suppress(Exception):
            await self.store.documents.release(msg.task_id, msg.dispatch, self.node)
        if backoff_s:
            await asyncio.sleep(backoff_s)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)
