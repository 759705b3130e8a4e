"""A running workflow's state, derived from its task tree: pure.

The runtime keeps no workflow state of its own. What the state machine needs is already
recorded elsewhere, each in one place:

- which steps started: a step's task exists, under an id derived from the workflow's id
  and the step's key (``step_task_id``), so a start carried out twice creates it once;
- how each started step is doing: its task's projection (status, result, error). A
  ``for_each`` step has one task, a container whose children are the elements (their ids
  derived from the container's, ``element_task_id``), and whose result is the list of
  the elements' results, in order;
- steps that failed before they had a task (a reference that resolved to nothing,
  parameters invalid once resolved): ``task.step_failed`` events in the workflow's log;
- whether the workflow was cancelled: its ``cancel_requested``.

``derive`` folds these into a ``WorkflowState``; ``settle`` also applies the orders
that need nothing but the state itself (a skipped step). Both the aggregator's runtime and
``taskcore rebuild`` use them, so the ``workflow`` view a rebuild writes is the live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskcore.domain.ids import idempotent_task_id
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows.commands import SkipStep, effect
from taskcore.workflows.decide import decide
from taskcore.workflows.evolve import fold
from taskcore.workflows.facts import (
    Fact,
    StepCancelRequested,
    StepFailed,
    StepStarted,
    StepTaskChanged,
    WorkflowCancelRequested,
)
from taskcore.workflows.keys import step_key
from taskcore.workflows.plan import WorkflowPlan
from taskcore.workflows.state import WorkflowState, initial_state
from taskcore.workflows.submission import OnFailure
from taskcore.workflows.view import workflow_view

FOR_EACH_TASK_TYPE = "workflow.for_each"


def step_task_id(workflow_id: str, step_id: str) -> str:
    """The id of a step's task (for a ``for_each`` step, its container's)."""
    return idempotent_task_id(workflow_id, step_key(step_id))


def element_task_id(container_id: str, element: int) -> str:
    """The id of a ``for_each`` element's task (a child of the step's container)."""
    return idempotent_task_id(container_id, str(element))


@dataclass(frozen=True)
class StepTask:
    """What the workflow reads of one of its steps' tasks."""

    task_id: str
    status: TaskStatus
    result: Any = None
    error: TaskError | None = None
    children: int = 0  # a container's elements (as counted so far)


def derive(
    plan: WorkflowPlan,
    workflow_id: str,
    tasks: Mapping[str, StepTask],
    failures: Mapping[str, TaskError],
    *,
    cancel_requested: bool,
) -> WorkflowState:
    """The workflow's state from its tree (``tasks`` by id: its children).

    A step task that ended CANCELLED while the workflow was winding down (cancelled, or
    a fail_fast failure elsewhere) is taken as cancelled by the workflow, not as a failure
    of its own; one that ended CANCELLED otherwise (someone cancelled that step) is one.
    """
    started: list[Fact] = []
    ended: list[Fact] = []
    cancelled: list[tuple[str, StepTask]] = []
    for step_id in plan.steps:
        task = tasks.get(step_task_id(workflow_id, step_id))
        if task is None:
            continue
        started.append(StepStarted(step_id, task.task_id))
        if task.status is TaskStatus.CANCELLED:
            cancelled.append((step_id, task))
        elif task.status is not TaskStatus.QUEUED:
            ended.append(_changed(step_id, task))
    ended += [StepFailed(step_id, error) for step_id, error in failures.items()]
    if cancel_requested:
        ended.append(WorkflowCancelRequested())
    state = fold(initial_state(plan.steps), [*started, *ended])
    winding_down = state.cancel_requested or (
        plan.on_failure is OnFailure.FAIL_FAST
        and any(s.failed_by_itself for s in state.steps.values())
    )
    last: list[Fact] = []
    for step_id, task in cancelled:
        if winding_down:
            last.append(StepCancelRequested(step_id))
        last.append(_changed(step_id, task))
    return fold(state, last)


def _changed(step_id: str, task: StepTask) -> StepTaskChanged:
    return StepTaskChanged(step_id, task.task_id, task.status, task.result, task.error)


def settle(plan: WorkflowPlan, state: WorkflowState) -> WorkflowState:
    """The state once every skip it calls for is applied (skips need no I/O: a step whose
    upstream can no longer complete, or every pending step of a workflow winding down)."""
    for _ in range(len(plan.steps) + 1):
        skips = [c for c in decide(plan, state) if isinstance(c, SkipStep)]
        if not skips:
            break
        state = fold(state, [effect(c) for c in skips])
    return state


def view(
    plan: WorkflowPlan, workflow_id: str, state: WorkflowState, tasks: Mapping[str, StepTask]
) -> dict[str, Any]:
    """The ``workflow`` field of the workflow's projection: a ``for_each`` step lists its
    elements' tasks (the container is bookkeeping)."""
    shown = workflow_view(plan, state)
    for step_id, planned in plan.steps.items():
        if planned.for_each is None:
            continue
        container = tasks.get(step_task_id(workflow_id, step_id))
        if container is not None:
            ids = [element_task_id(container.task_id, n) for n in range(container.children)]
            shown["steps"][step_id]["task_ids"] = ids
    return shown


@dataclass(frozen=True)
class ForEachEnding:
    """How a for_each step ends once every element has."""

    status: TaskStatus
    result: Any = None
    error: TaskError | None = None

    def data(self) -> dict[str, Any]:
        """The container's final event data."""
        data: dict[str, Any] = {"result": self.result}
        if self.error is not None:
            data["error"] = self.error.model_dump()
        return data


def for_each_ending(elements: list[StepTask]) -> ForEachEnding:
    """COMPLETED with the elements' results in element order if every one completed;
    otherwise FAILED if any failed or dead-lettered, else CANCELLED if any was cancelled,
    else COMPLETED_WITH_ERRORS (with the results), with a ``ForEachFailed`` error naming
    the first element that did not complete."""
    statuses = [e.status for e in elements]
    results = [e.result for e in elements]
    if all(s is TaskStatus.COMPLETED for s in statuses):
        return ForEachEnding(TaskStatus.COMPLETED, results)
    if TaskStatus.FAILED in statuses or TaskStatus.DEAD_LETTER in statuses:
        status = TaskStatus.FAILED
    elif TaskStatus.CANCELLED in statuses:
        status = TaskStatus.CANCELLED
    else:
        status = TaskStatus.COMPLETED_WITH_ERRORS
    bad = [(n, e) for n, e in enumerate(elements) if e.status is not TaskStatus.COMPLETED]
    index, first = bad[0]
    cause = f": {first.error.type}: {first.error.message}" if first.error else ""
    message = (
        f"{len(bad)} of {len(elements)} elements did not complete; the first, "
        f"element {index}, ended {first.status.value}{cause}"
    )
    error = TaskError(type="ForEachFailed", message=message, retryable=False)
    result = results if status is TaskStatus.COMPLETED_WITH_ERRORS else None
    return ForEachEnding(status, result, error)
