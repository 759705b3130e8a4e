"""Which dead letters an operator means: filters, and the opaque list cursor."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from taskcore.adapters.mongo import Doc

from taskcore_api.deadletters.records import RecordState
from taskcore_api.schemas import ClientAwareTime

StateFilter = Literal["pending", "replaying", "replayed", "discarded", "active", "all"]

# "active": everything an operator may still act on or look back at; discarded records
# are kept (nothing is lost) but only shown when asked for.
_STATES: dict[str, list[str]] = {
    "pending": [RecordState.PENDING],
    "replaying": [RecordState.REPLAYING],
    "replayed": [RecordState.REPLAYED],
    "discarded": [RecordState.DISCARDING, RecordState.DISCARDED],
    "active": [RecordState.PENDING, RecordState.REPLAYING, RecordState.REPLAYED],
}


class DeadLetterFilter(BaseModel):
    """A selection of dead letters; every field narrows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_type: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=100)
    user_id: str | None = Field(default=None, max_length=200)
    task_id: str | None = Field(default=None, max_length=200)
    since: ClientAwareTime | None = Field(default=None, description="dead-lettered at or after")
    until: ClientAwareTime | None = Field(default=None, description="dead-lettered before")
    error_contains: str | None = Field(
        default=None, max_length=500, description="text in the error (case-insensitive)"
    )

    def query(self, state: StateFilter = "active") -> Doc:
        q: Doc = {}
        for name in ("task_type", "reason", "user_id", "task_id"):
            value = getattr(self, name)
            if value is not None:
                q[name] = value
        when: Doc = {}
        if self.since is not None:
            when["$gte"] = _ms(self.since)
        if self.until is not None:
            when["$lt"] = _ms(self.until)
        if when:
            q["dead_lettered_at_ms"] = when
        if self.error_contains:
            q["error_text"] = {"$regex": re.escape(self.error_contains.lower())}
        if state != "all":
            q["state"] = {"$in": _STATES[state]}
        return q


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def encode_cursor(dead_lettered_at_ms: int, record_id: str) -> str:
    raw = json.dumps([dead_lettered_at_ms, record_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Raises ValueError for anything that is not a cursor this module made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, record_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a valid cursor") from exc
    if not isinstance(at, int) or not isinstance(record_id, str):
        raise ValueError("not a valid cursor")
    return at, record_id


def after_cursor(query: Doc, cursor: tuple[int, str]) -> Doc:
    """Narrow ``query`` to what comes after ``cursor`` in newest-first order."""
    at, record_id = cursor
    page: Doc = {
        "$or": [
            {"dead_lettered_at_ms": {"$lt": at}},
            {"dead_lettered_at_ms": at, "_id": {"$lt": record_id}},
        ]
    }
    return {"$and": [query, page]} if query else page


def filter_from(raw: dict[str, Any]) -> DeadLetterFilter:
    return DeadLetterFilter.model_validate(raw)
