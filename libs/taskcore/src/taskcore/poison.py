"""Dead-lettering a message no handler can read, with the reason in its headers.

Shared by every consumer: a poison message is parked on ``tasks.dlx`` and acked, so it
never crashes a consumer or blocks its queue.
"""

from __future__ import annotations

import logging
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from taskcore import metrics
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.messages import envelope as env
from taskcore.messages.topology import DEAD_LETTER_EXCHANGE

log = logging.getLogger(__name__)


async def dead_letter_poison(
    publisher: Publisher,
    message: AbstractIncomingMessage,
    *,
    reason: str,
    error: BaseException,
    source: str,
) -> None:
    headers: dict[str, Any] = dict(message.headers or {})
    headers.update(
        {
            env.HEADER_DEAD_REASON: reason,
            env.HEADER_DEAD_ERROR: f"{type(error).__name__}: {error}"[:4000],
            env.HEADER_DEAD_SOURCE: source,
            "x-original-routing-key": message.routing_key or "",
            "x-original-exchange": message.exchange or "",
        }
    )
    await publisher.publish(
        DEAD_LETTER_EXCHANGE,
        "dead",
        amqp_message(
            message.body,
            headers=headers,
            message_id=message.message_id,
            content_type=message.content_type or "application/octet-stream",
        ),
    )
    await message.ack()
    metrics.MESSAGES_DEAD_LETTERED_MALFORMED.labels(message.routing_key or "").inc()
    log.warning("Dead-lettered an unreadable message from %s (%s): %s", source, reason, error)
