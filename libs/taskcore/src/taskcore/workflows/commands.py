"""What the state machine orders the runtime to do: commands, named as orders.

Each command's effect, once carried out, is recorded as the fact named in its docstring
(``effect`` builds it); folded into the state, that fact is what stops ``decide`` from
ordering the same thing again. Between the two, ``decide`` repeats the order, so
carrying one out must be idempotent: derive task ids from ``step_key`` so a second start
finds the tasks the first created, and let the first FinishWorkflow win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows.facts import (
    Fact,
    ForEachStarted,
    StepCancelRequested,
    StepFailed,
    StepSkipped,
    StepStarted,
    WorkflowFinished,
)
from taskcore.workflows.keys import step_key


@dataclass(frozen=True)
class StartStep:
    """Create the step's task (key ``step_key(step_id)``) with these resolved and checked
    parameters. Recorded as ``StepStarted``."""

    step_id: str
    task_type: str
    parameters: dict[str, Any]
    priority: int | None = None
    max_attempts: int | None = None

    @property
    def key(self) -> str:
        return step_key(self.step_id)


@dataclass(frozen=True)
class StartForEach:
    """Create one task per element, in order, element ``n`` with parameters
    ``elements[n]`` and key ``step_key(step_id, n)``. Recorded as ``ForEachStarted``
    (with no tasks when ``elements`` is empty: the step then COMPLETED with ``[]``)."""

    step_id: str
    task_type: str
    elements: tuple[dict[str, Any], ...]
    priority: int | None = None
    max_attempts: int | None = None

    def key(self, element: int) -> str:
        return step_key(self.step_id, element)


@dataclass(frozen=True)
class CancelStep:
    """Cancel these open tasks of a started step. Recorded as ``StepCancelRequested``."""

    step_id: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class SkipStep:
    """Mark a pending step CANCELLED; it never runs. Recorded as ``StepSkipped``."""

    step_id: str


@dataclass(frozen=True)
class FailStep:
    """Mark a pending step FAILED without running it: ``error.type`` is ReferenceError
    (a reference resolved to nothing) or ValidationError (the resolved parameters are
    not valid). Recorded as ``StepFailed``."""

    step_id: str
    error: TaskError


@dataclass(frozen=True)
class FinishWorkflow:
    """End the workflow task with this status, result and error. Recorded as
    ``WorkflowFinished``; ordered only once no step is open."""

    status: TaskStatus
    result: Any = None
    error: TaskError | None = None


Command = StartStep | StartForEach | CancelStep | SkipStep | FailStep | FinishWorkflow


def effect(command: Command, task_ids: Sequence[str] = ()) -> Fact:
    """The fact recording that ``command`` was carried out; ``task_ids`` are the tasks
    a start created (one for StartStep, one per element for StartForEach)."""
    match command:
        case StartStep():
            return StepStarted(command.step_id, task_ids[0])
        case StartForEach():
            return ForEachStarted(command.step_id, tuple(task_ids))
        case CancelStep():
            return StepCancelRequested(command.step_id)
        case SkipStep():
            return StepSkipped(command.step_id)
        case FailStep():
            return StepFailed(command.step_id, command.error)
        case FinishWorkflow():
            return WorkflowFinished(command.status)
