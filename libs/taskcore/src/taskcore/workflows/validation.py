"""Validation at submit: every problem of a workflow, each at its exact field path.

``validate`` checks what needs the whole workflow; the field-by-field checks are the
pydantic models' (``taskcore.workflows.submission``). ``parse_submission`` does both and
is what the API calls. What needs the task-type registry (unknown types, the types'
parameter schemas) comes in through the ``check_step`` hook; see
``taskcore.workflows.set_aside`` for how references are set aside for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from taskcore.workflows.graph import find_cycles, upstream
from taskcore.workflows.problems import InvalidWorkflow, Location, Problem, problems_from_pydantic
from taskcore.workflows.references import (
    BadReference,
    MalformedReference,
    ReferencePath,
    reference_in,
    scan_references,
)
from taskcore.workflows.set_aside import on_reference_path, set_aside
from taskcore.workflows.submission import MAX_STEPS, StepSpec, WorkflowSubmission

StepCheck = Callable[[StepSpec, Any], Iterable[Problem]]
"""The registry's say on one step: called with the step and its parameters (at submit,
references replaced by ``PLACEHOLDER``; when the step starts, resolved), it returns
problems located relative to the step: ``("task_type",)`` or ``("parameters", ...)``.
``set_aside.parameter_problems`` turns a ``Params`` model into the parameters part::

    def check_step(step: StepSpec, parameters: Any) -> list[Problem]:
        if step.task_type not in registry:
            return [Problem(("task_type",), f"unknown task type {step.task_type!r}")]
        return parameter_problems(registry.get(step.task_type).Params, parameters)
"""


def parse_submission(body: Any, check_step: StepCheck | None = None) -> WorkflowSubmission:
    """The submission ``body`` (decoded JSON) describes, or ``InvalidWorkflow`` with every
    problem found: the fields' own first, then the workflow's (only once the fields are
    right, since a graph of malformed steps cannot be checked)."""
    try:
        submission = WorkflowSubmission.model_validate(body)
    except ValidationError as exc:
        raise InvalidWorkflow(problems_from_pydantic(exc)) from None
    problems = validate(submission, check_step)
    if problems:
        raise InvalidWorkflow(problems)
    return submission


def validate(submission: WorkflowSubmission, check_step: StepCheck | None = None) -> list[Problem]:
    """Every problem of ``submission``, grouped by step in order: duplicate ids, unknown or
    repeated ids in ``depends_on``, dependency cycles (at the edge that closes each, naming
    its steps), ``for_each`` that is not a well-formed reference, malformed references,
    references to steps that are not upstream, ``item`` outside for_each steps, and
    whatever ``check_step`` finds off the references' paths."""
    steps = submission.steps
    problems: list[Problem] = []
    if len(steps) > MAX_STEPS:
        problems.append(Problem(("steps",), f"at most {MAX_STEPS} steps, got {len(steps)}"))
    first = _first_positions(steps)
    graph = {step.id: step.depends_on for i, step in enumerate(steps) if first[step.id] == i}
    cycles = _cycle_problems(graph, first)
    above = upstream(graph)
    for i, step in enumerate(steps):
        at: Location = ("steps", i)
        problems += _id_problems(step, i, first)
        problems += _depends_on_problems(step, at, first)
        problems += cycles.get(i, [])
        ups = _upstream_of(step, above)
        problems += _for_each_problems(step, at, ups, first)
        problems += _reference_problems(step, at, ups, first)
        if check_step is not None:
            problems += _registry_problems(step, at, check_step)
    return problems


def _first_positions(steps: Iterable[StepSpec]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, step in enumerate(steps):
        first.setdefault(step.id, i)
    return first


def _id_problems(step: StepSpec, i: int, first: Mapping[str, int]) -> list[Problem]:
    if first[step.id] == i:
        return []
    return [Problem(("steps", i, "id"), f"duplicate step id {step.id!r} (steps[{first[step.id]}])")]


def _depends_on_problems(step: StepSpec, at: Location, first: Mapping[str, int]) -> list[Problem]:
    problems: list[Problem] = []
    for k, dep in enumerate(step.depends_on):
        where = (*at, "depends_on", k)
        if dep not in first:
            problems.append(Problem(where, f"unknown step id {dep!r}"))
        elif dep in step.depends_on[:k]:
            problems.append(Problem(where, f"{dep!r} is listed twice"))
    return problems


def _cycle_problems(
    graph: Mapping[str, tuple[str, ...]], first: Mapping[str, int]
) -> dict[int, list[Problem]]:
    by_step: dict[int, list[Problem]] = {}
    for cycle in find_cycles(graph):
        i = first[cycle.steps[-1]]
        where = ("steps", i, "depends_on", cycle.closing_edge)
        reason = f"dependency cycle: {cycle.describe()} (each step depends on the next)"
        by_step.setdefault(i, []).append(Problem(where, reason))
    return by_step


def _upstream_of(step: StepSpec, above: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The steps ``step`` may refer to; computed from its own ``depends_on``, so a step
    with a duplicate id is checked against what it itself depends on."""
    ups = {d for d in step.depends_on if d in above}
    for d in list(ups):
        ups |= above[d]
    return frozenset(ups - {step.id})


def _for_each_problems(
    step: StepSpec, at: Location, ups: frozenset[str], first: Mapping[str, int]
) -> list[Problem]:
    if step.for_each is None:
        return []
    where = (*at, "for_each")
    try:
        path = reference_in(step.for_each)
    except MalformedReference as exc:
        return [Problem(where, f"for_each must be a reference to a list: {exc}")]
    if path.is_item:
        return [Problem(where, "for_each cannot refer to 'item': it names the list to iterate")]
    reason = _target_problem(step, path, ups, first)
    return [Problem(where, reason)] if reason else []


def _reference_problems(
    step: StepSpec, at: Location, ups: frozenset[str], first: Mapping[str, int]
) -> list[Problem]:
    problems: list[Problem] = []
    for found in scan_references(step.parameters):
        where = (*at, "parameters", *found.location)
        if isinstance(found, BadReference):
            problems.append(Problem(where, found.reason))
        elif reason := _target_problem(step, found.path, ups, first):
            problems.append(Problem(where, reason))
    return problems


def _target_problem(
    step: StepSpec, path: ReferencePath, ups: frozenset[str], first: Mapping[str, int]
) -> str | None:
    if path.step_id is None:
        if step.for_each is None:
            return f"{str(path)!r}: 'item' exists only in steps with for_each"
        return None
    if path.step_id == step.id:
        return f"{str(path)!r}: a step cannot refer to its own result"
    if path.step_id not in first:
        return f"{str(path)!r} refers to unknown step {path.step_id!r}"
    if path.step_id not in ups:
        return (
            f"{str(path)!r} refers to step {path.step_id!r}, which {step.id!r} does not "
            "depend on, directly or transitively: add it to depends_on"
        )
    return None


def _registry_problems(step: StepSpec, at: Location, check_step: StepCheck) -> list[Problem]:
    parameters, references = set_aside(step.parameters)
    return [
        problem.within(at)
        for problem in check_step(step, parameters)
        if not _set_aside(problem.location, references)
    ]


def _set_aside(location: Location, references: tuple[Location, ...]) -> bool:
    inside = location[1:]
    return location[:1] == ("parameters",) and on_reference_path(inside, references)
