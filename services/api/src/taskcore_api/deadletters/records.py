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
# Bounds on what a dead letter's headers can make the record hold (a MongoDB document is
# at most 16 MB, and an operator reads these).
MAX_DEATHS = 32
MAX_HEADER_DEPTH = 8
MAX_HEADERS_JSON = 64 * 1024
_OWN_HEADERS = frozenset(
    {
        env.HEADER_TASK_ID,
        env.HEADER_TASK_TYPE,
        env.HEADER_USER_ID,
        env.HEADER_RETRY_COUNT,
        env.HEADER_DISPATCH,
        env.HEADER_TRACEPARENT,
        env.HEADER_DEAD_REASON,
        env.HEADER_DEAD_ERROR,
        env.HEADER_DEAD_TRACEBACK,
        env.HEADER_DEAD_SOURCE,
        "x-original-exchange",
        "x-original-routing-key",
        "x-replay-of",
    }
)
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


def json_safe(value: Any, depth: int = 0) -> Any:
    """AMQP header values (bytes, datetimes, decimals, nested tables) as plain JSON.

    Bounded, because headers come from whoever published: tables nested deeper than
    MAX_HEADER_DEPTH become their text (no RecursionError), and the caller caps the total.
    """
    if depth > MAX_HEADER_DEPTH:
        return _clip(str(value))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return _utc(value).isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _clip(text: str, limit: int = 256) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def rabbit_deaths(headers: Mapping[str, Any]) -> list[Doc]:
    """RabbitMQ's ``x-death`` entries, most recent first, as far as they can be read.

    Anyone can publish to ``tasks.dlx`` with any header, so nothing here trusts its shape:
    a value that is not a list is no history, an entry that is not a table is skipped,
    each field is read as the type it should be or left out, and at most MAX_DEATHS
    entries are kept. A dead letter is always parked with what could be read.
    """
    raw = headers.get("x-death")
    if not isinstance(raw, list | tuple):
        return []
    deaths = []
    for entry in raw[:MAX_DEATHS]:
        if isinstance(entry, Mapping):
            deaths.append(
                {
                    "reason": _short_text(entry.get("reason")),
                    "queue": _short_text(entry.get("queue")),
                    "exchange": _short_text(entry.get("exchange")),
                    "routing_keys": _texts(entry.get("routing-keys")),
                    "count": _count(entry.get("count")),
                    "time": _time(entry.get("time")),
                }
            )
    return deaths


def _short_text(value: Any) -> str | None:
    text = _text(value) if isinstance(value, str | bytes) else None
    return None if text is None else _clip(text)


def _texts(value: Any) -> list[str]:
    items = value[:MAX_DEATHS] if isinstance(value, list | tuple) else []
    return [t for t in (_short_text(item) for item in items) if t is not None]


def _count(value: Any) -> int:
    # bool is an int to Python, not a count to anyone.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return min(value, 2**62)
    return 1


def _time(value: Any) -> str | None:
    return _utc(value).isoformat() if isinstance(value, datetime) else None


def death_history(headers: Mapping[str, Any]) -> list[Doc]:
    """Every recorded death, most recent first: taskcore's own, then RabbitMQ's x-death."""
    history: list[Doc] = []
    reason = _text(headers.get(env.HEADER_DEAD_REASON))
    if reason:
        history.append(
            {"by": _text(headers.get(env.HEADER_DEAD_SOURCE)) or "taskcore", "reason": reason}
        )
    history.extend({"by": "rabbitmq", **death} for death in rabbit_deaths(headers))
    return history


def reason_of(headers: Mapping[str, Any]) -> str:
    explicit = _text(headers.get(env.HEADER_DEAD_REASON))
    if explicit:
        return explicit
    deaths = rabbit_deaths(headers)
    if deaths:
        return _RABBIT_REASONS.get(deaths[0]["reason"] or "", "rejected")
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
    deaths = rabbit_deaths(headers)
    if deaths:
        last = deaths[0]
        message = (
            f"RabbitMQ dead-lettered the message from queue {last['queue']!r} "
            f"({last['reason']}, {last['count']} time(s))."
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
    deaths = rabbit_deaths(headers)
    if deaths:
        first = deaths[-1]  # where it was first published, before any dead-lettering
        keys = first["routing_keys"] or [""]
        return {"exchange": first["exchange"] or "", "routing_key": keys[0]}
    return None


def headers_json(headers: Mapping[str, Any]) -> str:
    """The headers as JSON text, kept whole up to MAX_HEADERS_JSON characters.

    Past that (headers made to be huge), only taskcore's own headers are kept, clipped,
    and ``x-taskcore-headers-dropped`` says how large the rest was.
    """
    text = json.dumps(json_safe(headers), sort_keys=True)
    if len(text) <= MAX_HEADERS_JSON:
        return text
    kept: Doc = {
        key: _clip(str(json_safe(value)), 4096)
        for key, value in headers.items()
        if isinstance(key, str) and key in _OWN_HEADERS
    }
    kept["x-taskcore-headers-dropped"] = len(text)
    return json.dumps(kept, sort_keys=True)


def record_id(message: DeadMessage) -> str:
    """The message id when it is a usable id (so a redelivered dead letter is parked once),
    else a hash of body and headers."""
    if message.message_id and _SAFE_ID.match(message.message_id):
        return message.message_id
    digest = hashlib.sha256(message.body)
    digest.update(headers_json(message.headers).encode())
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


def build_record(
    message: DeadMessage, *, now: datetime, max_body_bytes: int, too_large: bool = False
) -> Doc:
    """The record to insert (state ``pending``); the parker adds the replay lineage.

    ``too_large``: the body is over the consumers' size limit, so it is not parsed (and the
    reason is ``too_large`` unless a consumer already named one).
    """
    headers = message.headers
    reason = _text(headers.get(env.HEADER_DEAD_REASON)) or ("too_large" if too_large else None)
    reason = reason or reason_of(headers)
    error = error_of(headers, reason)
    task = None if too_large else _task_message(message.body)
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
        "task_id": task.task_id if task else _short_text(headers.get(env.HEADER_TASK_ID)),
        "dispatch": task.dispatch if task else _int_or_none(dispatch_header),
        "task_type": task.task_type if task else _short_text(headers.get(env.HEADER_TASK_TYPE)),
        "user_id": task.user_id if task else _short_text(headers.get(env.HEADER_USER_ID)),
        "is_task_message": task is not None,
        "reason": _clip(reason),
        "source": _short_text(headers.get(env.HEADER_DEAD_SOURCE)) or "rabbitmq",
        "error": error,
        "error_text": " ".join(
            filter(None, [error["type"], error["message"], error["traceback"]])
        ).lower(),
        "headers_json": headers_json(headers),
        **_body_fields(message.body, max_body_bytes),
        "content_type": message.content_type,
        "message_id": message.message_id,
        "death_history": death_history(headers),
        "original": original_destination(headers),
        "replay_of_header": _short_text(headers.get(HEADER_REPLAY_OF)),
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


def unreadable_record(message: DeadMessage, *, now: datetime, max_body_bytes: int) -> Doc:
    """The record of a dead letter whose headers ``build_record`` could not read: its body,
    id and content type, the reason ``malformed_headers``, and no header trusted."""
    bare = DeadMessage(
        body=message.body,
        headers={},
        message_id=message.message_id if isinstance(message.message_id, str) else None,
        content_type=message.content_type if isinstance(message.content_type, str) else None,
    )
    record = build_record(bare, now=now, max_body_bytes=max_body_bytes, too_large=True)
    record["reason"] = "malformed_headers"
    record["error"] = {
        "type": "MalformedHeaders",
        "message": "The dead letter's headers could not be read; only its body is kept.",
        "traceback": None,
    }
    record["error_text"] = "malformedheaders the dead letter's headers could not be read"
    return record


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
