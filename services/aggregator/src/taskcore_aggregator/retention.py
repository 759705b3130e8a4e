"""What the event log keeps, and for how long.

Lifecycle events (every type but ``task.progress``) are kept forever: they are the
history the projections are rebuilt from. Progress events are high-volume (a running task
may report several a second) and only their latest value matters to the projection, so
each carries ``expires_at`` = append time + ``TASKCORE_PROGRESS_RETENTION_SECONDS``
(default 7 days) and MongoDB's TTL index on ``expires_at`` removes it after that. A
rebuild after they expire gives the same lifecycle state (status, result, error,
attempts, times, counters); only the ``progress`` field of the rebuilt projection may be
older or empty, since the events that set it are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from taskcore.domain.events import LIFECYCLE_EVENT_TYPES, TaskEvent


@dataclass(frozen=True)
class Retention:
    progress: timedelta

    def expires_at(self, event: TaskEvent, appended_at: datetime) -> datetime | None:
        """When the log may drop this event; None for an event kept forever."""
        if event.type in LIFECYCLE_EVENT_TYPES:
            return None
        return appended_at + self.progress
