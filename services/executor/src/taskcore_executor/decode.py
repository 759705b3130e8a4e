"""Reading a task message off the wire, or saying why it cannot be read."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.rabbit import Publisher
from taskcore.messages import envelope as env
from taskcore.messages.envelope import TaskMessage
from taskcore.poison import dead_letter_poison, too_large

from taskcore_executor.outcomes import DeadReason

# Every task message taskcore publishes carries these (see outbox.Dispatch); one without
# them was not published by taskcore and is not trusted.
REQUIRED_HEADERS = (
    env.HEADER_TASK_ID,
    env.HEADER_TASK_TYPE,
    env.HEADER_RETRY_COUNT,
    env.HEADER_DISPATCH,
)


TOO_LARGE = "too_large"


class Malformed(Exception):
    """A message no executor can act on; ``reason`` is a dead-letter reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def header(message: AbstractIncomingMessage, name: str) -> str | None:
    value = (message.headers or {}).get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(message: AbstractIncomingMessage, *, max_bytes: int | None = None) -> TaskMessage:
    """The task message, or ``Malformed`` saying why it cannot be one (over ``max_bytes``:
    refused unread)."""
    oversized = None if max_bytes is None else too_large(message, max_bytes)
    if oversized is not None:
        raise Malformed(TOO_LARGE, str(oversized))
    try:
        msg = TaskMessage.model_validate_json(message.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Malformed(
            DeadReason.MALFORMED, f"the body is not a task message ({where}: {first['msg']})"
        ) from exc
    missing = [name for name in REQUIRED_HEADERS if header(message, name) is None]
    if missing:
        raise Malformed(DeadReason.MISSING_HEADERS, f"missing headers: {', '.join(missing)}")
    if header(message, env.HEADER_TASK_ID) != msg.task_id:
        raise Malformed(
            DeadReason.MALFORMED, "the x-task-id header names another task than the body"
        )
    return msg


async def dead_letter_unreadable(
    publisher: Publisher, message: AbstractIncomingMessage, reason: str, exc: BaseException
) -> None:
    """Park a message no executor can act on in the dead-letter queue, and ack it."""
    await dead_letter_poison(publisher, message, reason=reason, error=exc, source="executor")
    metrics.TASKS_DEAD_LETTERED.labels("unknown", reason).inc()
