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
    StepFailed,
    StepStarted,
    StepTaskChanged,
    WorkflowCancelRequested,
)
from taskcore.workflows.keys import step_key
from taskcore.workflows.plan import WorkflowPlan
from taskcore.workflows.state import WorkflowState, initial_state
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
    """The workflow's state from its tree (``tasks`` by id: its children)."""
    facts: list[Fact] = []
    for step_id in plan.steps:
        task = tasks.get(step_task_id(workflow_id, step_id))
        if task is None:
            continue
        facts.append(StepStarted(step_id, task.task_id))
        if task.status is not TaskStatus.QUEUED:
            facts.append(
                StepTaskChanged(step_id, task.task_id, task.status, task.result, task.error)
            )
    facts += [StepFailed(step_id, error) for step_id, error in failures.items()]
    if cancel_requested:
        facts.append(WorkflowCancelRequested())
    return fold(initial_state(plan.steps), facts)


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
