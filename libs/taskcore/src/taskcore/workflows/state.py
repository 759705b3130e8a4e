"""A workflow's progress: what the state machine knows of each step.

Plain frozen dataclasses: the state is folded from facts (``taskcore.workflows.evolve``)
once per event of every step task, so copying it must be cheap even with a for_each of
10,000 elements; it is derived, never stored, so it needs no serialisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from taskcore.domain.status import OPEN_STATUSES, TERMINAL, TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows.elements import ChunkedTuple

OPEN: frozenset[TaskStatus] = frozenset(OPEN_STATUSES)
# The endings that make fail_fast stop the workflow (a step that ends COMPLETED_WITH_ERRORS
# does not: it stops only its dependents, which cannot run without a COMPLETED input).
FAILURES: frozenset[TaskStatus] = frozenset(
    {TaskStatus.FAILED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED}
)
PENDING = "PENDING"  # how the view shows a step that has not started


@dataclass(frozen=True, slots=True)
class ElementState:
    """One element of a for_each step: its task and what became of it."""

    task_id: str
    status: TaskStatus = TaskStatus.QUEUED
    result: Any = None
    error: TaskError | None = None


@dataclass(frozen=True, slots=True)
class StepState:
    """One step. ``status`` is None while the step is pending, then its task's status
    (for a for_each step, derived from its elements: QUEUED until one moves, RUNNING
    while any is open, then the outcome). A terminal status is final."""

    status: TaskStatus | None = None
    task_ids: tuple[str, ...] = ()
    result: Any = None
    error: TaskError | None = None
    # A for_each step's elements in element order, once it started.
    elements: ChunkedTuple[ElementState] | None = None
    open_elements: int = 0
    # The workflow ordered this step's tasks cancelled (CancelStep was applied).
    cancel_requested: bool = False
    # The workflow cancelled this step before it started (SkipStep was applied).
    skipped: bool = False
    # It (or one of its elements) ended FAILED, DEAD_LETTER or CANCELLED by itself, not
    # because the workflow cancelled it: under fail_fast, this stops the workflow. Kept
    # as a flag set when it happens so later events cannot erase it.
    failed_by_itself: bool = False

    @property
    def pending(self) -> bool:
        return self.status is None

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def completed(self) -> bool:
        return self.status is TaskStatus.COMPLETED

    @property
    def unsuccessful(self) -> bool:
        """Ended, and not COMPLETED: its dependents can never start."""
        return self.terminal and not self.completed

    def open_task_ids(self) -> tuple[str, ...]:
        """The tasks of this step that are still open (all of them for a plain step)."""
        if self.elements is None:
            return self.task_ids if self.open else ()
        return tuple(e.task_id for e in self.elements if e.status in OPEN)


@dataclass(frozen=True)
class WorkflowState:
    """Every step's state (keyed by step id), and the workflow's own two facts.

    ``finished`` is the status ``FinishWorkflow`` recorded; after it nothing changes.
    """

    steps: Mapping[str, StepState]
    cancel_requested: bool = False
    finished: TaskStatus | None = None

    def step(self, step_id: str) -> StepState:
        return self.steps[step_id]


def initial_state(step_ids: Iterable[str]) -> WorkflowState:
    """Every step pending: the state of a workflow just submitted (``step_ids``: e.g.
    ``plan.steps``)."""
    return WorkflowState(steps={step_id: StepState() for step_id in step_ids})
