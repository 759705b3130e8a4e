"""Task statuses and the transitions the state machine allows."""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DEAD_LETTER = "DEAD_LETTER"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[TaskStatus] = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.DEAD_LETTER,
        TaskStatus.COMPLETED_WITH_ERRORS,
    }
)

# Which status may follow which. Events are facts, so an open task accepts any outcome,
# even one whose predecessor event was lost (a ``completed`` without its ``started``).
# A terminal status has no successor, with the one exception the architecture allows:
# an operator's replay moves a dead letter back to QUEUED.
_ANY_OUTCOME = frozenset({TaskStatus.RUNNING, TaskStatus.RETRYING, *TERMINAL})
ALLOWED_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: _ANY_OUTCOME,
    TaskStatus.RUNNING: _ANY_OUTCOME,  # RUNNING again: another executor took over
    TaskStatus.RETRYING: _ANY_OUTCOME,
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
    TaskStatus.DEAD_LETTER: frozenset({TaskStatus.QUEUED}),
    TaskStatus.COMPLETED_WITH_ERRORS: frozenset(),
}


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


OPEN_STATUSES: tuple[TaskStatus, ...] = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRYING)
