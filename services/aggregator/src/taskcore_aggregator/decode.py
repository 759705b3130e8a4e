"""Reading internal event messages, upcasting old event versions on the way in."""

from __future__ import annotations

import json
from typing import Any

from taskcore.domain.events import TaskEvent
from taskcore.domain.upcasting import upcast

from taskcore_aggregator.projection import at_store_precision


class MalformedMessage(ValueError):
    """A message no version of the ``EventBatch`` contract can read."""


def decode_events(body: bytes) -> list[TaskEvent]:
    """The events of an ``EventBatch`` body, each at the current schema version.

    Producers of an older release may still send old event versions during an upgrade,
    so each event is upcast before validation, exactly as the log is on read. Times are
    cut to the log's milliseconds, so a live fold and a rebuild see the same values.
    """
    try:
        raw: Any = json.loads(body)
        events = raw["events"]
        if not isinstance(events, list):
            raise TypeError("events is not a list")
        return [at_store_precision(TaskEvent.model_validate(upcast(dict(e)))) for e in events]
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError included
        raise MalformedMessage(str(exc)) from exc
