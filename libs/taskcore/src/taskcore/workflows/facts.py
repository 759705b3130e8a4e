"""What happened to a workflow's steps: the facts its state is folded from.

The runtime turns what it records into these: its own orders once carried out
(``StepStarted`` for a ``StartStep``...) and the step tasks' status changes
(``StepTaskChanged``, from each task event or task projection). Past tense, frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError


@dataclass(frozen=True)
class StepStarted:
    """The step's task was created (the effect of ``StartStep``)."""

    step_id: str
    task_id: str


@dataclass(frozen=True)
class ForEachStarted:
    """The elements' tasks were created, in element order (the effect of
    ``StartForEach``). No tasks: the list was empty and the step COMPLETED with ``[]``."""

    step_id: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class StepTaskChanged:
    """A step's task (``element`` None) or a for_each element's task has a new status;
    ``result`` and ``error`` are its own when the status is terminal."""

    step_id: str
    task_id: str
    status: TaskStatus
    result: Any = None
    error: TaskError | None = None
    element: int | None = None


@dataclass(frozen=True)
class StepFailed:
    """The step failed before it had a task: a reference resolved to nothing or the
    resolved parameters were invalid (the effect of ``FailStep``)."""

    step_id: str
    error: TaskError


@dataclass(frozen=True)
class StepSkipped:
    """The step was CANCELLED before it started (the effect of ``SkipStep``)."""

    step_id: str


@dataclass(frozen=True)
class StepCancelRequested:
    """The workflow asked for the step's open tasks to be cancelled (the effect of
    ``CancelStep``); the tasks' own CANCELLED events follow."""

    step_id: str


@dataclass(frozen=True)
class WorkflowCancelRequested:
    """Someone cancelled the workflow."""


@dataclass(frozen=True)
class WorkflowFinished:
    """The workflow reached its terminal status (the effect of ``FinishWorkflow``)."""

    status: TaskStatus


Fact = (
    StepStarted
    | ForEachStarted
    | StepTaskChanged
    | StepFailed
    | StepSkipped
    | StepCancelRequested
    | WorkflowCancelRequested
    | WorkflowFinished
)
