"""Dead-lettering a message no handler can read, with the reason in its headers.

Shared by every consumer: a poison message is parked on ``tasks.dlx`` and acked, so it
never crashes a consumer or blocks its queue. A message larger than
``TASKCORE_MAX_MESSAGE_BYTES`` is poison too, found before anything parses it: no one
message may cost a consumer more memory and CPU than that.
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

# Far above anything taskcore publishes (a task message holds its parameters, at most the
# API's 1 MiB body; an event batch its events), far below RabbitMQ's own 128 MiB cap.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class MessageTooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the message has {size} bytes, more than the {limit} allowed")


def too_large(message: AbstractIncomingMessage, limit: int) -> MessageTooLarge | None:
    """The error to report when ``message``'s body is over ``limit`` bytes, else None."""
    size = len(message.body)
    return MessageTooLarge(size, limit) if size > limit else None


async def dead_letter_if_too_large(
    publisher: Publisher, message: AbstractIncomingMessage, *, limit: int, source: str
) -> bool:
    """Dead-letter ``message`` with reason ``too_large`` when it is over ``limit`` bytes.
    Call it first in a consumer's handler; True means it was handled (and acked)."""
    error = too_large(message, limit)
    if error is None:
        return False
    await dead_letter_poison(publisher, message, reason="too_large", error=error, source=source)
    return True


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
