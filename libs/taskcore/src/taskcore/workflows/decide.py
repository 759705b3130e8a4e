"""``decide(plan, state) -> commands``: what a workflow's state calls for now. Pure.

The runtime calls it after folding each new fact, carries the commands out, records
their effects as facts, and calls it again; when it returns nothing, the workflow waits
for its step tasks. It is a function of the state alone, so two replicas deciding on the
same state order the same things, and an order whose effect is folded is not repeated.

The rules, in this order:
1. A finished workflow orders nothing.
2. Winding down (the workflow was cancelled, or under fail_fast a step failed by
   itself): skip every pending step, cancel every open step not already asked to.
3. Otherwise each pending step: skip it if a step upstream of it ended without
   COMPLETED (it can never start); start it if every step it depends on COMPLETED. A
   start resolves the references first; one that resolves to nothing, or parameters the
   ``check_step`` hook finds invalid, fail the step instead (ReferenceError,
   ValidationError); under fail_fast such a failure is then the only order given.
4. Once every step is terminal: finish (see ``taskcore.workflows.outcome``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskcore.domain.task import TaskError
from taskcore.workflows.commands import (
    CancelStep,
    Command,
    FailStep,
    SkipStep,
    StartForEach,
    StartStep,
)
from taskcore.workflows.outcome import finish
from taskcore.workflows.plan import PlannedStep, WorkflowPlan
from taskcore.workflows.problems import Problem, describe, field_path, type_name
from taskcore.workflows.resolution import NO_ITEM, UnresolvedReference, lookup, resolve
from taskcore.workflows.state import WorkflowState
from taskcore.workflows.submission import OnFailure, StepSpec
from taskcore.workflows.validation import StepCheck

# At most this many problems are listed in a ValidationError's message.
MAX_LISTED_PROBLEMS = 10


def decide(
    plan: WorkflowPlan,
    state: WorkflowState,
    check_step: StepCheck | None = None,
    *,
    max_elements: int | None = None,
) -> list[Command]:
    """The commands ``state`` calls for, in step order (a finish comes alone).

    ``check_step`` validates each start's resolved parameters (the same hook as at
    submit); ``max_elements`` bounds a for_each (a longer list fails the step with
    TreeLimitExceeded). ``state`` must have an entry for every step of ``plan``.
    """
    if state.finished is not None:
        return []
    if _winding_down(plan, state):
        commands = _wind_down(plan, state)
    else:
        commands = _advance(plan, state, check_step, max_elements)
    if not commands and all(state.steps[step_id].terminal for step_id in plan.steps):
        return [finish(plan, state)]
    return commands


def _winding_down(plan: WorkflowPlan, state: WorkflowState) -> bool:
    if state.cancel_requested:
        return True
    fail_fast = plan.on_failure is OnFailure.FAIL_FAST
    return fail_fast and any(s.failed_by_itself for s in state.steps.values())


def _wind_down(plan: WorkflowPlan, state: WorkflowState) -> list[Command]:
    commands: list[Command] = []
    for step_id in plan.steps:
        step = state.steps[step_id]
        if step.pending:
            commands.append(SkipStep(step_id))
        elif step.open and not step.cancel_requested:
            commands.append(CancelStep(step_id, step.open_task_ids()))
    return commands


def _advance(
    plan: WorkflowPlan, state: WorkflowState, check: StepCheck | None, max_elements: int | None
) -> list[Command]:
    steps = state.steps
    results = {step_id: s.result for step_id, s in steps.items() if s.completed}
    dead_ends = frozenset(step_id for step_id, s in steps.items() if s.unsuccessful)
    commands: list[Command] = []
    for step_id, planned in plan.steps.items():
        if not steps[step_id].pending:
            continue
        if planned.upstream & dead_ends:
            commands.append(SkipStep(step_id))
        elif all(d in results for d in planned.depends_on):
            commands.append(_start(planned, results, check, max_elements))
    if plan.on_failure is OnFailure.FAIL_FAST and any(isinstance(c, FailStep) for c in commands):
        # The failure stops the workflow: start nothing beside it (winding down follows).
        return [c for c in commands if isinstance(c, FailStep)]
    return commands


def _start(
    planned: PlannedStep,
    results: Mapping[str, Any],
    check: StepCheck | None,
    max_elements: int | None,
) -> Command:
    spec = planned.spec
    if planned.for_each is None:
        parameters = _parameters(spec, results, check)
        if isinstance(parameters, TaskError):
            return FailStep(spec.id, parameters)
        return StartStep(spec.id, spec.task_type, parameters, spec.priority, spec.max_attempts)
    try:
        items = lookup(planned.for_each, results)
    except UnresolvedReference as exc:
        return FailStep(spec.id, _reference_error(exc, "for_each"))
    return _start_for_each(planned, items, results, check, max_elements)


def _start_for_each(
    planned: PlannedStep,
    items: Any,
    results: Mapping[str, Any],
    check: StepCheck | None,
    max_elements: int | None,
) -> Command:
    spec = planned.spec
    if not isinstance(items, list):
        reason = f"for_each: {planned.for_each} is {type_name(items)}, not a list"
        return FailStep(spec.id, TaskError(type="ReferenceError", message=reason))
    if max_elements is not None and len(items) > max_elements:
        reason = f"for_each: {len(items)} elements, more than the {max_elements} allowed"
        return FailStep(spec.id, TaskError(type="TreeLimitExceeded", message=reason))
    elements: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        parameters = _parameters(spec, results, check, item, element=n)
        if isinstance(parameters, TaskError):
            return FailStep(spec.id, parameters)
        elements.append(parameters)
    return StartForEach(spec.id, spec.task_type, tuple(elements), spec.priority, spec.max_attempts)


def _parameters(
    spec: StepSpec,
    results: Mapping[str, Any],
    check: StepCheck | None,
    item: Any = NO_ITEM,
    element: int | None = None,
) -> dict[str, Any] | TaskError:
    """The step's (or one element's) parameters, resolved and checked; or why not."""
    try:
        parameters = resolve(spec.parameters, results, item)
    except UnresolvedReference as exc:
        return _reference_error(exc, "parameters", element)
    if not isinstance(parameters, dict):
        reason = f"must be an object, got {type_name(parameters)}"
        return _validation_error([Problem(("parameters",), reason)], element)
    problems = list(check(spec, parameters)) if check else []
    return _validation_error(problems, element) if problems else parameters


def _reference_error(exc: UnresolvedReference, field: str, element: int | None = None) -> TaskError:
    where = field_path((field, *exc.location))
    prefix = "" if element is None else f"element {element}: "
    message = f"{prefix}{where}: {exc.path!r} resolves to nothing: {exc.reason}"
    return TaskError(type="ReferenceError", message=message)


def _validation_error(problems: list[Problem], element: int | None = None) -> TaskError:
    listed = describe(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    suffix = f"; and {more} more" if more > 0 else ""
    prefix = "" if element is None else f"element {element}: "
    return TaskError(type="ValidationError", message=f"{prefix}{listed}{suffix}")
