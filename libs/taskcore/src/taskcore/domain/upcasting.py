"""Old event versions are upcast on read, never rewritten in the log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskcore.domain.events import CURRENT_SCHEMA_VERSION

RawEvent = dict[str, Any]


def _v1_to_v2(raw: RawEvent) -> RawEvent:
    """Version 1 carried ``error`` as a bare message string; version 2 as an object."""
    data = dict(raw.get("data") or {})
    error = data.get("error")
    if isinstance(error, str):
        data["error"] = {"type": "Error", "message": error, "retryable": False}
    return {**raw, "data": data, "schema_version": 2}


_UPCASTERS: dict[int, Callable[[RawEvent], RawEvent]] = {1: _v1_to_v2}


def upcast(raw: RawEvent) -> RawEvent:
    """Bring a stored event dict up to the current schema version."""
    version = int(raw.get("schema_version", 1))
    while version < CURRENT_SCHEMA_VERSION:
        raw = _UPCASTERS[version](raw)
        version = int(raw["schema_version"])
    return raw
