"""Every exchange, queue and binding of taskcore, declared in one place.

Every service calls ``declare_topology`` at start; declarations are idempotent, so the
order services start in does not matter. Arguments (TTL, DLX, priority) are fixed here:
RabbitMQ refuses a redeclaration with different arguments, so they must never drift.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from taskcore.domain.retry_policy import DELAY_TIERS_S, delay_queue_name
from taskcore.domain.task import Tier

TASKS_EXCHANGE = "tasks.exchange"
RETRY_EXCHANGE = "tasks.retry.exchange"
DEAD_LETTER_EXCHANGE = "tasks.dlx"
DEAD_LETTER_QUEUE = "tasks.dlq.queue"
INTERNAL_EVENTS_EXCHANGE = "tasks.internal.events"
EXTERNAL_EVENTS_EXCHANGE = "tasks.events.exchange"

AGGREGATOR_QUEUE = "tasks.aggregator.queue"
BRIDGE_QUEUE = "tasks.bridge.queue"

TIERS: tuple[Tier, ...] = ("paid", "free")
MAX_PRIORITY = 9

# Routing keys on the internal events topic.
EVENTS_ROUTING_PREFIX = "task."  # producers' events: task.<type> or task.batch
COMMITTED_ROUTING_KEY = "committed.batch"  # aggregator -> bridge, after commit
CANCEL_ROUTING_KEY = "control.cancel"  # api -> every executor


def task_queue_name(tier: Tier) -> str:
    return f"tasks.{tier}.queue"


def dispatch_routing_key(tier: Tier) -> str:
    return tier


def retry_routing_key(delay_tier_s: int, tier: Tier) -> str:
    # The delay queue dead-letters with the original routing key, so the tier rides
    # along after the delay and brings the message back to its own queue.
    return f"{delay_tier_s}s.{tier}"


def unroutable_is_normal(exchange: str, routing_key: str) -> bool:
    """Whether a publish that reaches no queue is normal, not an error.

    Every publish is mandatory. Queues on the external events exchange belong to
    subscribers, and there may be none; a cancel signal reaches the executors running now,
    and there may be none (a task claimed later sees ``cancel_requested`` in the store).
    Everywhere else a message that reaches no queue would be lost.
    """
    return exchange == EXTERNAL_EVENTS_EXCHANGE or (
        exchange == INTERNAL_EVENTS_EXCHANGE and routing_key == CANCEL_ROUTING_KEY
    )


_DEAD_LETTER_ARGS: dict[str, Any] = {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}


async def declare_topology(channel: AbstractChannel) -> None:
    """Declare the whole topology idempotently."""
    tasks = await channel.declare_exchange(
        TASKS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    retry = await channel.declare_exchange(
        RETRY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )
    internal = await channel.declare_exchange(
        INTERNAL_EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        EXTERNAL_EVENTS_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dlq = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True)
    await dlq.bind(dlx)
    await _declare_task_queues(channel, tasks)
    await _declare_delay_queues(channel, retry)
    aggregator = await channel.declare_queue(
        AGGREGATOR_QUEUE, durable=True, arguments=_DEAD_LETTER_ARGS
    )
    await aggregator.bind(internal, routing_key=f"{EVENTS_ROUTING_PREFIX}#")
    bridge = await channel.declare_queue(BRIDGE_QUEUE, durable=True, arguments=_DEAD_LETTER_ARGS)
    await bridge.bind(internal, routing_key=COMMITTED_ROUTING_KEY)


async def _declare_task_queues(channel: AbstractChannel, tasks: AbstractExchange) -> None:
    # Classic queues, because they support per-message priority with many levels.
    for tier in TIERS:
        queue = await channel.declare_queue(
            task_queue_name(tier),
            durable=True,
            arguments={**_DEAD_LETTER_ARGS, "x-max-priority": MAX_PRIORITY},
        )
        await queue.bind(tasks, routing_key=dispatch_routing_key(tier))
        await queue.bind(tasks, routing_key=f"*.{tier}")


async def _declare_delay_queues(channel: AbstractChannel, retry: AbstractExchange) -> None:
    # One fixed TTL per queue: RabbitMQ only expires messages at a queue's head, so mixing
    # delays in one queue would make short delays wait behind long ones. Expired messages
    # dead-letter back to tasks.exchange with their routing key "<delay>s.<tier>".
    for tier_s in DELAY_TIERS_S:
        queue = await channel.declare_queue(
            delay_queue_name(tier_s),
            durable=True,
            arguments={
                "x-message-ttl": tier_s * 1000,
                "x-dead-letter-exchange": TASKS_EXCHANGE,
            },
        )
        await queue.bind(retry, routing_key=f"{tier_s}s.*")
