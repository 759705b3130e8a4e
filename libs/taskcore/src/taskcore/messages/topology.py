"""Every exchange, queue and binding of taskcore, declared in one place.

Every service calls ``declare_topology`` at start; declarations are idempotent, so the
order services start in does not matter. Arguments (TTL, DLX, priority, queue type) are
fixed here: RabbitMQ refuses a redeclaration with different arguments, so they must never
drift, and every service of a deployment must run with the same ``TASKCORE_QUEUE_TYPE``.

Queue types (``TASKCORE_QUEUE_TYPE``):

- ``classic`` (default): single-node queues; the tier queues have priorities 0-9.
- ``quorum``: every durable queue is a Raft-replicated quorum queue, for clusters that
  must survive losing a node. RabbitMQ 3.10's quorum queues have no priorities, so
  ``priority`` then orders only the messages an executor has already prefetched (its
  slots go to the highest priority first), not the queue's whole backlog; tiers stay
  separate queues, so free work still never delays paid work. We do not emulate
  priorities with a queue per priority band: that needs the band in every routing key
  (dispatch, retry, re-check) and weighted consumers, and RabbitMQ 3.13+ gives quorum
  queues two priority levels of their own (``priority`` above 4 is "high") with these
  same declarations. Dead-lettering is at-least-once, so a retry leaving its delay
  queue or a task going to ``tasks.dlx`` is not lost if a node fails meanwhile.
"""

from __future__ import annotations

from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

from taskcore.domain.retry_policy import DELAY_TIERS_S, delay_queue_name
from taskcore.domain.task import Tier

TASKS_EXCHANGE = "tasks.exchange"
RETRY_EXCHANGE = "tasks.retry.exchange"
DEAD_LETTER_EXCHANGE = "tasks.dlx"
DEAD_LETTER_QUEUE = "tasks.dlq.queue"
INTERNAL_EVENTS_EXCHANGE = "tasks.internal.events"
EXTERNAL_EVENTS_EXCHANGE = "tasks.events.exchange"

# Where a publish must reach a queue (a returned message there is an error to retry).
ROUTED_EXCHANGES = (TASKS_EXCHANGE, RETRY_EXCHANGE, DEAD_LETTER_EXCHANGE, INTERNAL_EVENTS_EXCHANGE)

AGGREGATOR_QUEUE = "tasks.aggregator.queue"
BRIDGE_QUEUE = "tasks.bridge.queue"

TIERS: tuple[Tier, ...] = ("paid", "free")
MAX_PRIORITY = 9

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = ("classic", "quorum")
# A quorum queue dead-letters a message redelivered this many times (a consumer that fails
# on it forever: a bug, not an outage). Every consumer backs off between tries, so this is
# hours of a broken store, never a blip. Explicit, because RabbitMQ 4 would default to 20.
QUORUM_DELIVERY_LIMIT = 1000

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


class TopologyMismatch(RuntimeError):
    """The broker holds a queue declared with other arguments (another queue type, say)."""


def queue_arguments(
    queue_type: QueueType,
    *,
    dead_letter_exchange: str | None = DEAD_LETTER_EXCHANGE,
    ttl_ms: int | None = None,
    priority: bool = False,
    consumed: bool = True,
) -> dict[str, Any]:
    """The arguments of one durable queue, for the deployment's queue type."""
    arguments: dict[str, Any] = {}
    if dead_letter_exchange is not None:
        arguments["x-dead-letter-exchange"] = dead_letter_exchange
    if ttl_ms is not None:
        arguments["x-message-ttl"] = ttl_ms
    if queue_type == "classic":
        if priority:
            arguments["x-max-priority"] = MAX_PRIORITY
        return arguments
    arguments["x-queue-type"] = "quorum"
    if dead_letter_exchange is not None:
        # at-least-once dead-lettering requires reject-publish overflow (no length limit
        # is set, so it never rejects).
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
        if consumed:
            arguments["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
    return arguments


class TopologyMissing(RuntimeError):
    """A service that does not declare the topology found part of it missing."""


EXCHANGES = (
    TASKS_EXCHANGE,
    RETRY_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    INTERNAL_EVENTS_EXCHANGE,
    EXTERNAL_EVENTS_EXCHANGE,
)


def queue_names() -> list[str]:
    """Every durable queue of the topology."""
    return [
        DEAD_LETTER_QUEUE,
        *(task_queue_name(tier) for tier in TIERS),
        *(delay_queue_name(s) for s in DELAY_TIERS_S),
        AGGREGATOR_QUEUE,
        BRIDGE_QUEUE,
    ]


async def declare_topology(
    channel: AbstractChannel, queue_type: QueueType = "classic", *, declare: bool = True
) -> None:
    """Declare the whole topology idempotently (see the module's notes on queue types).

    ``declare=False`` (``TASKCORE_DECLARE_TOPOLOGY=false``) only checks that every exchange
    and queue exists, with passive declarations, which need no permission: the broker
    users of the services then need no configure rights on shared names, and the topology
    is declared once per release by ``taskcore topology`` (deploy/README.md).
    """
    if not declare:
        await _verify(channel)
        return
    try:
        await _declare(channel, queue_type)
    except ChannelPreconditionFailed as exc:
        raise TopologyMismatch(
            f"RabbitMQ refused the {queue_type} topology ({exc}); every service must run with "
            "the same TASKCORE_QUEUE_TYPE, and switching an existing deployment needs its "
            "queues drained and deleted first (see deploy/README.md)."
        ) from exc


async def _verify(channel: AbstractChannel) -> None:
    kind, name = "exchange", ""
    try:
        for name in EXCHANGES:
            await channel.declare_exchange(name, passive=True)
        kind = "queue"
        for name in queue_names():
            await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity as exc:
        raise TopologyMissing(
            f"RabbitMQ has no {kind} {name!r}: declare the topology first (`taskcore topology`, "
            "as a broker user allowed to configure it), or let the services declare it "
            "(TASKCORE_DECLARE_TOPOLOGY=true)."
        ) from exc


async def _declare(channel: AbstractChannel, queue_type: QueueType) -> None:
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
    # The end of the line: no dead-letter exchange, and no delivery limit (past it a
    # quorum queue would drop a dead letter the parker failed to store).
    dlq = await channel.declare_queue(
        DEAD_LETTER_QUEUE,
        durable=True,
        arguments=queue_arguments(queue_type, dead_letter_exchange=None),
    )
    await dlq.bind(dlx)
    await _declare_task_queues(channel, tasks, queue_type)
    await _declare_delay_queues(channel, retry, queue_type)
    aggregator = await channel.declare_queue(
        AGGREGATOR_QUEUE, durable=True, arguments=queue_arguments(queue_type)
    )
    await aggregator.bind(internal, routing_key=f"{EVENTS_ROUTING_PREFIX}#")
    bridge = await channel.declare_queue(
        BRIDGE_QUEUE, durable=True, arguments=queue_arguments(queue_type)
    )
    await bridge.bind(internal, routing_key=COMMITTED_ROUTING_KEY)


async def _declare_task_queues(
    channel: AbstractChannel, tasks: AbstractExchange, queue_type: QueueType
) -> None:
    # Classic queues support per-message priority with many levels; see the module's notes
    # for quorum queues.
    for tier in TIERS:
        queue = await channel.declare_queue(
            task_queue_name(tier),
            durable=True,
            arguments=queue_arguments(queue_type, priority=True),
        )
        await queue.bind(tasks, routing_key=dispatch_routing_key(tier))
        await queue.bind(tasks, routing_key=f"*.{tier}")


async def _declare_delay_queues(
    channel: AbstractChannel, retry: AbstractExchange, queue_type: QueueType
) -> None:
    # One fixed TTL per queue: RabbitMQ only expires messages at a queue's head, so mixing
    # delays in one queue would make short delays wait behind long ones. Expired messages
    # dead-letter back to tasks.exchange with their routing key "<delay>s.<tier>". Quorum
    # queues take TTL and dead-lettering alike (RabbitMQ 3.10+).
    for tier_s in DELAY_TIERS_S:
        queue = await channel.declare_queue(
            delay_queue_name(tier_s),
            durable=True,
            arguments=queue_arguments(
                queue_type,
                dead_letter_exchange=TASKS_EXCHANGE,
                ttl_ms=tier_s * 1000,
                consumed=False,
            ),
        )
        await queue.bind(retry, routing_key=f"{tier_s}s.*")
