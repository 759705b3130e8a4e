"""Task events: facts, past tense, each with a registered type name and schema version.

An event's identity is ``event_id`` (unique in the log) and ``(task_id, sequence)``
(unique too). ``sequence`` orders one task's events; it is unique and increasing per task
but need not be contiguous (producers reserve blocks, see the README's design section).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcore.domain.clock import UtcDatetime

CURRENT_SCHEMA_VERSION = 2


class EventType(StrEnum):
    SUBMITTED = "task.submitted"
    STARTED = "task.started"
    PROGRESS = "task.progress"
    RETRYING = "task.retrying"
    AWAITING_CHILDREN = "task.awaiting_children"
    COMPLETED = "task.completed"
    COMPLETED_WITH_ERRORS = "task.completed_with_errors"
    FAILED = "task.failed"
    CANCEL_REQUESTED = "task.cancel_requested"
    CANCELLED = "task.cancelled"
    DEAD_LETTERED = "task.dead_lettered"
    REPLAYED = "task.replayed"
    DISCARDED = "task.discarded"
    # A workflow's step failed before it had a task (its references or parameters).
    STEP_FAILED = "task.step_failed"

    @property
    def short_name(self) -> str:
        """The name after ``task.``, as used in CloudEvent types."""
        return self.value.removeprefix("task.")


# Lifecycle events are kept forever; progress events are high-volume and may expire.
LIFECYCLE_EVENT_TYPES = frozenset(set(EventType) - {EventType.PROGRESS})


class TaskEvent(BaseModel):
    """One entry of the append-only event log."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    task_id: str
    sequence: int = Field(ge=1)
    type: EventType
    schema_version: int = CURRENT_SCHEMA_VERSION
    occurred_at: UtcDatetime
    data: dict[str, Any] = Field(default_factory=dict)
    # The W3C trace context of the code that produced the event; not part of the state.
    traceparent: str | None = None


def event_id_for(task_id: str, sequence: int) -> str:
    """Deterministic event ids make a re-emitted event a duplicate, not a new fact."""
    return f"{task_id}:{sequence}"
