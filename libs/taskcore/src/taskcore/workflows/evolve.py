"""``evolve(state, fact) -> state`` and ``fold``: pure, total, never raising.

Facts are things that happened, so evolve never refuses one; it ignores what cannot
change the state, which makes every fact idempotent (the runtime delivers at least once):

- a fact about a step the workflow does not have, or any fact once the workflow finished;
- a start of a step that is no longer pending (a second StepStarted is a redelivery);
- a task change for a task the step does not know (fold the start first: the runtime
  records a start in the same commit that creates the tasks, so this is a stray);
- a task change once that task (or step) is terminal: the first ending is final, so
  a late RUNNING cannot reopen it, and a replayed dead letter does not resume a workflow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows.elements import ChunkedTuple
from taskcore.workflows.facts import (
    Fact,
    ForEachStarted,
    StepCancelRequested,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepTaskChanged,
    WorkflowCancelRequested,
    WorkflowFinished,
)
from taskcore.workflows.state import FAILURES, OPEN, ElementState, StepState, WorkflowState


def fold(state: WorkflowState, facts: Iterable[Fact]) -> WorkflowState:
    """The state after every fact, in order."""
    for fact in facts:
        state = evolve(state, fact)
    return state


def evolve(state: WorkflowState, fact: Fact) -> WorkflowState:
    if state.finished is not None:
        return state
    if isinstance(fact, WorkflowCancelRequested):
        return state if state.cancel_requested else replace(state, cancel_requested=True)
    if isinstance(fact, WorkflowFinished):
        return replace(state, finished=fact.status)
    step = state.steps.get(fact.step_id)
    if step is None:
        return state
    changed = _evolve_step(step, fact)
    if changed is step:
        return state
    return replace(state, steps={**state.steps, fact.step_id: changed})


def _evolve_step(step: StepState, fact: Fact) -> StepState:
    if isinstance(fact, StepStarted):
        return (
            replace(step, status=TaskStatus.QUEUED, task_ids=(fact.task_id,))
            if step.pending
            else step
        )
    if isinstance(fact, ForEachStarted):
        return _for_each_started(step, fact) if step.pending else step
    if isinstance(fact, StepTaskChanged):
        return _task_changed(step, fact)
    if isinstance(fact, StepFailed):
        if not step.pending:
            return step
        return replace(step, status=TaskStatus.FAILED, error=fact.error, failed_by_itself=True)
    if isinstance(fact, StepSkipped):
        return replace(step, status=TaskStatus.CANCELLED, skipped=True) if step.pending else step
    if isinstance(fact, StepCancelRequested):
        return replace(step, cancel_requested=True) if step.open else step
    return step


def _for_each_started(step: StepState, fact: ForEachStarted) -> StepState:
    if not fact.task_ids:
        return replace(step, status=TaskStatus.COMPLETED, result=[], elements=ChunkedTuple())
    return replace(
        step,
        status=TaskStatus.QUEUED,
        task_ids=fact.task_ids,
        elements=ChunkedTuple.of(ElementState(task_id) for task_id in fact.task_ids),
        open_elements=len(fact.task_ids),
    )


def _task_changed(step: StepState, fact: StepTaskChanged) -> StepState:
    if not step.open:
        return step
    if step.elements is None:
        if fact.element is not None or fact.task_id not in step.task_ids:
            return step
        return _plain_task_changed(step, fact)
    if fact.element is None or not 0 <= fact.element < len(step.elements):
        return step
    return _element_changed(step, fact, fact.element)


def _plain_task_changed(step: StepState, fact: StepTaskChanged) -> StepState:
    if fact.status in OPEN:
        return replace(step, status=fact.status)
    return replace(
        step,
        status=fact.status,
        result=fact.result,
        error=fact.error,
        failed_by_itself=_by_itself(fact.status, step.cancel_requested),
    )


def _element_changed(step: StepState, fact: StepTaskChanged, index: int) -> StepState:
    assert step.elements is not None
    old = step.elements[index]
    if old.task_id != fact.task_id or old.status not in OPEN:
        return step
    new = ElementState(old.task_id, fact.status, fact.result, fact.error)
    elements = step.elements.with_item(index, new)
    if fact.status in OPEN:
        moved = step.status is TaskStatus.QUEUED and fact.status is not TaskStatus.QUEUED
        status = TaskStatus.RUNNING if moved else step.status
        return replace(step, elements=elements, status=status)
    open_elements = step.open_elements - 1
    step = replace(
        step,
        elements=elements,
        open_elements=open_elements,
        status=TaskStatus.RUNNING,
        failed_by_itself=step.failed_by_itself or _by_itself(fact.status, step.cancel_requested),
    )
    return _for_each_ended(step) if open_elements == 0 else step


def _by_itself(status: TaskStatus, cancel_requested: bool) -> bool:
    """Whether ending in ``status`` is the step's own failure rather than the effect of
    the workflow cancelling it."""
    if status is TaskStatus.CANCELLED and cancel_requested:
        return False
    return status in FAILURES


def _for_each_ended(step: StepState) -> StepState:
    """The step's outcome once its last element ended: COMPLETED (or, with partial
    elements, COMPLETED_WITH_ERRORS) with the elements' results in element order;
    otherwise FAILED if any element failed or dead-lettered, else CANCELLED."""
    assert step.elements is not None
    ended = [e.status for e in step.elements]
    if all(s is TaskStatus.COMPLETED for s in ended):
        return replace(step, status=TaskStatus.COMPLETED, result=[e.result for e in step.elements])
    if TaskStatus.FAILED in ended or TaskStatus.DEAD_LETTER in ended:
        status = TaskStatus.FAILED
    elif TaskStatus.CANCELLED in ended:
        status = TaskStatus.CANCELLED
    else:
        status = TaskStatus.COMPLETED_WITH_ERRORS
    result = (
        [e.result for e in step.elements] if status is TaskStatus.COMPLETED_WITH_ERRORS else None
    )
    return replace(step, status=status, result=result, error=_elements_error(step))


def _elements_error(step: StepState) -> TaskError:
    assert step.elements is not None
    bad = [(i, e) for i, e in enumerate(step.elements) if e.status is not TaskStatus.COMPLETED]
    index, first = bad[0]
    cause = f": {first.error.type}: {first.error.message}" if first.error else ""
    message = (
        f"{len(bad)} of {len(step.elements)} elements did not complete; "
        f"the first, element {index}, ended {first.status.value}{cause}"
    )
    return TaskError(type="ForEachFailed", message=message, retryable=False)
