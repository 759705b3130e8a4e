"""From a dead AMQP message to the record an operator inspects (pure: no I/O).

A message reaches ``tasks.dlq.queue`` in one of three ways, and each leaves its own marks:

- the executor gave up on a task: the task message itself, published to ``tasks.dlx``
  with ``x-dead-reason``, ``x-dead-error``, ``x-dead-traceback``, ``x-dead-source``;
  ``message_id`` is ``<task_id>:<dispatch>``, the ``dead_letter_id`` of the task's
  ``task.dead_lettered`` event;
- a consumer could not read a message (poison): the original body and headers, plus the
  reason headers and ``x-original-exchange`` / ``x-original-routing-key``;
- RabbitMQ dead-lettered it itself (rejected, expired, over a queue limit): ``x-death``.

The record keeps the body and headers verbatim (as text, so that no key in them can
clash with MongoDB's field-name rules) and lifts out what filters and replay need.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from taskcore.adapters.mongo import Doc
from taskcore.messages import envelope as env
from taskcore.messages.envelope import TaskMessage

HEADER_REPLAY_OF = "x-replay-of"
HEADER_ORIGINAL_EXCHANGE = "x-original-exchange"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"

# RabbitMQ's own x-death reasons, in the record's vocabulary.
_RABBIT_REASONS = {
    "rejected": "rejected",
    "expired": "expired",
    "maxlen": "rejected_by_limit",
    "delivery_limit": "rejected_by_limit",
}
PROMPT_PARKING = timedelta(seconds=2)
# Ids travel in URL paths; anything else is replaced by a content hash.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._~-]{0,199}$")


class RecordState:
    """Where a record is in its life (one field, moved only by conditional updates)."""

    PENDING = "pending"
    REPLAYING = "replaying"
    REPLAYED = "replayed"
    DISCARDING = "discarding"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class DeadMessage:
    """What the parker read off ``tasks.dlq.queue``, independent of the AMQP client."""

    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None = None
    content_type: str | None = None
    timestamp: datetime | None = None
    routing_key: str | None = None


def json_safe(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals, nested tables) as plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def death_history(headers: Mapping[str, Any]) -> list[Doc]:
    """Every recorded death, most recent first: taskcore's own, then RabbitMQ's x-death."""
    history: list[Doc] = []
    reason = _text(headers.get(env.HEADER_DEAD_REASON))
    if reason:
        history.append(
            {"by": _text(headers.get(env.HEADER_DEAD_SOURCE)) or "taskcore", "reason": reason}
        )
    for entry in headers.get("x-death") or []:
        if not isinstance(entry, Mapping):
            continue
        keys = entry.get("routing-keys") or []
        history.append(
            {
                "by": "rabbitmq",
                "reason": _text(entry.get("reason")),
                "queue": _text(entry.get("queue")),
                "exchange": _text(entry.get("exchange")),
                "routing_keys": [_text(k) for k in keys],
                "count": int(entry.get("count") or 1),
                "time": json_safe(entry.get("time")),
            }
        )
    return history


def reason_of(headers: Mapping[str, Any]) -> str:
    explicit = _text(headers.get(env.HEADER_DEAD_REASON))
    if explicit:
        return explicit
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, Mapping)]
    if deaths:
        return _RABBIT_REASONS.get(_text(deaths[0].get("reason")) or "", "rejected")
    return "unknown"


def error_of(headers: Mapping[str, Any], reason: str) -> Doc:
    """``{type, message, traceback}``: the last error, as the dying component reported it."""
    raw = _text(headers.get(env.HEADER_DEAD_ERROR))
    traceback = _text(headers.get(env.HEADER_DEAD_TRACEBACK)) or None
    if raw:
        kind, sep, message = raw.partition(": ")
        if sep and kind.isidentifier():
            return {"type": kind, "message": message, "traceback": traceback}
        return {"type": "Error", "message": raw, "traceback": traceback}
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, Mapping)]
    if deaths:
        last = deaths[0]
        message = (
            f"RabbitMQ dead-lettered the message from queue {_text(last.get('queue'))!r} "
            f"({_text(last.get('reason'))}, {int(last.get('count') or 1)} time(s))."
        )
        return {"type": "RabbitMQDeadLetter", "message": message, "traceback": None}
    return {
        "type": "Unknown",
        "message": f"dead-lettered ({reason}) without details",
        "traceback": None,
    }


def original_destination(headers: Mapping[str, Any]) -> Doc | None:
    """Where the message was going before it died, if anything says so."""
    if HEADER_ORIGINAL_EXCHANGE in headers:
        return {
            "exchange": _text(headers.get(HEADER_ORIGINAL_EXCHANGE)) or "",
            "routing_key": _text(headers.get(HEADER_ORIGINAL_ROUTING_KEY)) or "",
        }
    deaths = [d for d in headers.get("x-death") or [] if isinstance(d, Mapping)]
    if deaths:
        first = deaths[-1]  # where it was first published, before any dead-lettering
        keys = first.get("routing-keys") or [""]
        return {"exchange": _text(first.get("exchange")) or "", "routing_key": _text(keys[0]) or ""}
    return None


def record_id(message: DeadMessage) -> str:
    """The message id when it is a usable id (so a redelivered dead letter is parked once),
    else a hash of body and headers."""
    if message.message_id and _SAFE_ID.match(message.message_id):
        return message.message_id
    digest = hashlib.sha256(message.body)
    digest.update(json.dumps(json_safe(message.headers), sort_keys=True).encode())
    if message.message_id:
        digest.update(message.message_id.encode())
    return f"dl-{digest.hexdigest()[:32]}"


def _task_message(body: bytes) -> TaskMessage | None:
    try:
        return TaskMessage.model_validate_json(body)
    except (ValidationError, ValueError):
        return None


def _body_fields(body: bytes, max_bytes: int) -> Doc:
    kept = body[:max_bytes]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return {
        "body_text": text,
        "body_encoding": encoding,
        "body_size": len(body),
        "body_truncated": len(body) > max_bytes,
    }


def body_bytes(record: Doc) -> bytes:
    """The stored body as it was published (or its kept prefix, when truncated)."""
    text: str = record.get("body_text") or ""
    if record.get("body_encoding") == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def body_value(record: Doc) -> Any:
    """The body for display: parsed JSON when it is JSON, else the text."""
    if record.get("body_encoding") == "base64":
        return record.get("body_text")
    text = record.get("body_text") or ""
    try:
        return json.loads(text)
    except ValueError:
        return text


def death_time(stamp: datetime | None, now: datetime) -> datetime:
    """When the message died. AMQP times have whole seconds only; a message parked within
    moments of its death takes the parking time instead, so records keep their order."""
    if stamp is None:
        return now
    stamp = _utc(stamp)
    return now if timedelta(0) <= now - stamp < PROMPT_PARKING else stamp


def build_record(message: DeadMessage, *, now: datetime, max_body_bytes: int) -> Doc:
    """The record to insert (state ``pending``); the parker adds the replay lineage."""
    headers = message.headers
    reason = reason_of(headers)
    error = error_of(headers, reason)
    task = _task_message(message.body)
    stamp = message.timestamp
    if not _text(headers.get(env.HEADER_DEAD_REASON)):
        deaths = death_history(headers)
        when = deaths[0].get("time") if deaths else None
        stamp = datetime.fromisoformat(when) if isinstance(when, str) else None
    dead_at = death_time(stamp, now)
    dispatch_header = headers.get(env.HEADER_DISPATCH)
    return {
        "_id": record_id(message),
        "state": RecordState.PENDING,
        "task_id": task.task_id if task else _text(headers.get(env.HEADER_TASK_ID)),
        "dispatch": task.dispatch if task else _int_or_none(dispatch_header),
        "task_type": task.task_type if task else _text(headers.get(env.HEADER_TASK_TYPE)),
        "user_id": task.user_id if task else _text(headers.get(env.HEADER_USER_ID)),
        "is_task_message": task is not None,
        "reason": reason,
        "source": _text(headers.get(env.HEADER_DEAD_SOURCE)) or "rabbitmq",
        "error": error,
        "error_text": " ".join(
            filter(None, [error["type"], error["message"], error["traceback"]])
        ).lower(),
        "headers_json": json.dumps(json_safe(headers), sort_keys=True),
        **_body_fields(message.body, max_body_bytes),
        "content_type": message.content_type,
        "message_id": message.message_id,
        "death_history": death_history(headers),
        "original": original_destination(headers),
        "replay_of_header": _text(headers.get(HEADER_REPLAY_OF)),
        "dead_lettered_at": dead_at,
        "dead_lettered_at_ms": int(dead_at.timestamp() * 1000),
        "parked_at_ms": int(now.timestamp() * 1000),
        "replay_of": None,
        "generation": 0,
        "replay_count": 0,
        "replayed_at_ms": None,
        "replay": None,
        "discard": None,
        "lease_until_ms": 0,
    }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
