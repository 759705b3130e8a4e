"""What plain aio-pika gets out of RabbitMQ on this machine: the ceiling for taskcore's figures.

Every baseline uses its own uniquely named durable queue, persistent messages and publisher
confirms, the same guarantees taskcore asks of the broker, and deletes the queue afterwards.
Publishers keep a sliding window of unconfirmed messages in flight; consumers ack manually.
Publisher and consumer use separate connections, as separate services would.

The body starts with the publisher's ``time.perf_counter()``; publisher and consumer run in
one process, so the difference on delivery is the end-to-end latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from .stats import latency_percentiles_ms, per_second

BODY_SIZE = 256
WINDOW = 256
_STAMP = struct.Struct("!d")
# A safety net for a killed run: RabbitMQ drops the queue once it has been unused this long.
_QUEUE_EXPIRES_MS = 10 * 60 * 1000


def _body(body_size: int) -> bytes:
    return _STAMP.pack(time.perf_counter()).ljust(body_size, b".")


def _sent_at(body: bytes) -> float:
    sent: float = _STAMP.unpack_from(body)[0]
    return sent


def _message(body_size: int) -> aio_pika.Message:
    return aio_pika.Message(_body(body_size), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


def _require_positive(**figures: float) -> None:
    # Nothing to measure would otherwise wait for a delivery that never comes.
    for name, value in figures.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive; got {value}")


def _deadline(n: int, floor_s: float = 30.0) -> float:
    # Generous: a tenth of the reference rates, so only a stuck run hits it.
    return max(floor_s, n / 250)


@contextlib.asynccontextmanager
async def _connection(url: str, name: str) -> AsyncIterator[AbstractConnection]:
    connection = await aio_pika.connect(
        url, timeout=10, client_properties={"connection_name": f"bench-baseline-{name}"}
    )
    try:
        yield connection
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def _throwaway_queue(channel: AbstractChannel) -> AsyncIterator[AbstractQueue]:
    queue = await channel.declare_queue(
        f"bench-baseline-{uuid.uuid4().hex[:12]}",
        durable=True,
        arguments={"x-expires": _QUEUE_EXPIRES_MS},
    )
    try:
        yield queue
    finally:
        await queue.delete(if_unused=False, if_empty=False)


async def _publish_confirmed(
    exchange: AbstractExchange,
    routing_key: str,
    n: int,
    *,
    window: int = WINDOW,
    body_size: int = BODY_SIZE,
) -> None:
    """Publish ``n`` persistent messages with at most ``window`` awaiting their confirm."""
    in_flight = asyncio.Semaphore(window)

    async def publish_one() -> None:
        try:
            await exchange.publish(_message(body_size), routing_key)
        finally:
            in_flight.release()

    published: list[asyncio.Task[None]] = []
    try:
        for _ in range(n):
            await in_flight.acquire()
            published.append(asyncio.create_task(publish_one()))
        await asyncio.gather(*published)
    finally:
        for task in published:
            task.cancel()


class _AckingConsumer:
    """Acks each delivery and records its latency; ``done`` is set after ``expected`` acks."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.latencies: list[float] = []
        self.first_at: float | None = None
        self.last_at = 0.0
        self.done = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        received = time.perf_counter()
        await message.ack()
        if self.first_at is None:
            self.first_at = received
        self.latencies.append(received - _sent_at(message.body))
        if len(self.latencies) >= self.expected:
            self.last_at = time.perf_counter()
            self.done.set()


async def _consume_until_done(
    url: str, queue_name: str, consumer: _AckingConsumer, prefetch: int, started: asyncio.Event
) -> None:
    async with _connection(url, "consumer") as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)
        await queue.consume(consumer.on_message, no_ack=False)
        started.set()
        await consumer.done.wait()


async def _with_consumer(
    url: str,
    queue: AbstractQueue,
    consumer: _AckingConsumer,
    prefetch: int,
    drive: Callable[[], Awaitable[None]],
) -> None:
    """Run ``drive()`` while a consumer on its own connection acks everything it sends."""
    started = asyncio.Event()
    consuming = asyncio.create_task(
        _consume_until_done(url, queue.name, consumer, prefetch, started)
    )
    try:
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([consuming, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if consuming.done():
            consuming.result()  # the consumer failed to start: raise its error
        await drive()
        await consuming
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming


async def confirmed_publish_rate(
    url: str, n: int, *, window: int = WINDOW, body_size: int = BODY_SIZE
) -> dict[str, Any]:
    """Persistent messages/s published with confirms, nobody consuming."""
    _require_positive(n=n)
    async with (
        asyncio.timeout(_deadline(n)),
        _connection(url, "publisher") as connection,
    ):
        channel = await connection.channel(publisher_confirms=True)
        async with _throwaway_queue(channel) as queue:
            started = time.perf_counter()
            await _publish_confirmed(
                channel.default_exchange, queue.name, n, window=window, body_size=body_size
            )
            seconds = time.perf_counter() - started
    return {
        "baseline": "raw_broker.confirmed_publish",
        "n": n,
        "window": window,
        "body_bytes": body_size,
        "seconds": round(seconds, 3),
        "msgs_per_s": per_second(n, seconds),
    }


async def publish_consume_rate(
    url: str,
    n: int,
    prefetch: int = 100,
    *,
    window: int = WINDOW,
    body_size: int = BODY_SIZE,
) -> dict[str, Any]:
    """Throughput from the first publish to the last ack, consuming while publishing."""
    _require_positive(n=n)
    consumer = _AckingConsumer(n)
    async with (
        asyncio.timeout(_deadline(n)),
        _connection(url, "publisher") as connection,
    ):
        channel = await connection.channel(publisher_confirms=True)
        async with _throwaway_queue(channel) as queue:
            started = 0.0

            async def publish_all() -> None:
                nonlocal started
                started = time.perf_counter()
                await _publish_confirmed(
                    channel.default_exchange, queue.name, n, window=window, body_size=body_size
                )

            await _with_consumer(url, queue, consumer, prefetch, publish_all)
    seconds = consumer.last_at - started
    return {
        "baseline": "raw_broker.publish_consume",
        "n": n,
        "prefetch": prefetch,
        "window": window,
        "body_bytes": body_size,
        "seconds": round(seconds, 3),
        "msgs_per_s": per_second(n, seconds),
        **latency_percentiles_ms(consumer.latencies),
    }


async def _publish_paced(
    channel: AbstractChannel, routing_key: str, total: int, per_s: float, body_size: int
) -> float:
    """Publish ``total`` messages on a fixed schedule; returns the worst lag behind it (s)."""
    loop = asyncio.get_running_loop()
    confirms: list[asyncio.Task[Any]] = []
    begin = loop.time()
    worst_lag = 0.0
    sent = 0
    try:
        while sent < total:
            now = loop.time()
            # Catch up on everything due, so a late wake-up costs latency, not rate.
            due = min(total, int((now - begin) * per_s) + 1)
            worst_lag = max(worst_lag, now - (begin + (due - 1) / per_s))
            for _ in range(due - sent):
                confirms.append(
                    asyncio.create_task(
                        channel.default_exchange.publish(_message(body_size), routing_key)
                    )
                )
            sent = due
            await asyncio.sleep(max(0.0, begin + sent / per_s - loop.time()))
        await asyncio.gather(*confirms)
    finally:
        for task in confirms:
            task.cancel()
    return worst_lag


async def paced_latency(
    url: str, rate: float, seconds: float, *, prefetch: int = 100, body_size: int = BODY_SIZE
) -> dict[str, Any]:
    """Latency percentiles, publish to delivery, at a fixed publish rate (messages/s)."""
    _require_positive(rate=rate, seconds=seconds)
    total = max(1, int(rate * seconds))
    consumer = _AckingConsumer(total)
    lag = 0.0
    async with (
        asyncio.timeout(seconds + _deadline(total)),
        _connection(url, "publisher") as connection,
    ):
        channel = await connection.channel(publisher_confirms=True)
        async with _throwaway_queue(channel) as queue:

            async def publish_all() -> None:
                nonlocal lag
                lag = await _publish_paced(channel, queue.name, total, rate, body_size)

            await _with_consumer(url, queue, consumer, prefetch, publish_all)
    return {
        "baseline": "raw_broker.paced_latency",
        "n": total,
        "target_msgs_per_s": rate,
        "seconds": seconds,
        "prefetch": prefetch,
        "body_bytes": body_size,
        "max_schedule_lag_ms": round(lag * 1000, 3),
        **latency_percentiles_ms(consumer.latencies),
    }


async def consume_rate(
    url: str, n: int, prefetch: int = 100, *, body_size: int = BODY_SIZE
) -> dict[str, Any]:
    """Pure consume+ack rate over a queue pre-filled with ``n`` persistent messages."""
    _require_positive(n=n)
    consumer = _AckingConsumer(n)
    async with (
        asyncio.timeout(2 * _deadline(n)),
        _connection(url, "publisher") as connection,
    ):
        channel = await connection.channel(publisher_confirms=True)
        async with _throwaway_queue(channel) as queue:
            await _publish_confirmed(channel.default_exchange, queue.name, n, body_size=body_size)

            async def nothing_to_publish() -> None:
                return None

            await _with_consumer(url, queue, consumer, prefetch, nothing_to_publish)
    # From the first delivery to the last ack: the backlog is already there.
    seconds = consumer.last_at - (consumer.first_at or consumer.last_at)
    return {
        "baseline": "raw_broker.consume",
        "n": n,
        "prefetch": prefetch,
        "body_bytes": body_size,
        "seconds": round(seconds, 3),
        "msgs_per_s": per_second(n, seconds),
    }


async def broker_version(url: str) -> str:
    """The broker's product and version as it announces them, e.g. "RabbitMQ 3.10.8"."""
    async with _connection(url, "probe") as connection:
        if connection.transport is None:
            return "unknown broker"
        server = connection.transport.connection.server_properties
        return f"{server.get('product', '?')!s} {server.get('version', '?')!s}"
