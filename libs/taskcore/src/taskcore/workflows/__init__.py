"""Workflows: steps with dependencies, references between their results, for_each fan-out.

The pure domain of ``POST /v1/workflows`` (no I/O library is imported below here):

- ``parse_submission(body, check_step)``: the request, validated (``InvalidWorkflow``
  carries every ``Problem`` with its field path, e.g. ``steps[2].depends_on[0]``);
- ``WorkflowPlan.of(submission)``: the valid workflow, ready to run;
- ``initial_state``, ``evolve``/``fold`` over ``Fact``s: the workflow's progress;
- ``decide(plan, state, check_step) -> [Command]``: what to do next;
- ``workflow_view(plan, state)``: the ``workflow`` field of the task projection;
- ``resolve``/``find_references``/``parse_reference``: references on their own.

Usage::

    submission = parse_submission(body, check_step)          # at the API
    plan = WorkflowPlan.of(submission)                        # in the runtime
    state = fold(initial_state(plan.steps), facts)
    for command in decide(plan, state, check_step):
        ...                                                   # carry out, record effect(...)
"""

from taskcore.workflows.commands import (
    CancelStep,
    Command,
    FailStep,
    FinishWorkflow,
    SkipStep,
    StartForEach,
    StartStep,
    effect,
)
from taskcore.workflows.decide import decide
from taskcore.workflows.evolve import evolve, fold
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
from taskcore.workflows.keys import parse_step_key, step_key
from taskcore.workflows.plan import WORKFLOW_TASK_TYPE, PlannedStep, WorkflowPlan
from taskcore.workflows.problems import InvalidWorkflow, Location, Problem, field_path
from taskcore.workflows.references import (
    MalformedReference,
    Reference,
    ReferencePath,
    find_references,
    parse_reference,
)
from taskcore.workflows.resolution import NO_ITEM, UnresolvedReference, lookup, resolve
from taskcore.workflows.set_aside import PLACEHOLDER, parameter_problems, set_aside
from taskcore.workflows.state import PENDING, ElementState, StepState, WorkflowState, initial_state
from taskcore.workflows.submission import (
    MAX_STEPS,
    STEP_ID_PATTERN,
    OnFailure,
    StepSpec,
    WorkflowSubmission,
)
from taskcore.workflows.validation import StepCheck, parse_submission, validate
from taskcore.workflows.view import workflow_view

__all__ = [
    "MAX_STEPS",
    "NO_ITEM",
    "PENDING",
    "PLACEHOLDER",
    "STEP_ID_PATTERN",
    "WORKFLOW_TASK_TYPE",
    "CancelStep",
    "Command",
    "ElementState",
    "Fact",
    "FailStep",
    "FinishWorkflow",
    "ForEachStarted",
    "InvalidWorkflow",
    "Location",
    "MalformedReference",
    "OnFailure",
    "PlannedStep",
    "Problem",
    "Reference",
    "ReferencePath",
    "SkipStep",
    "StartForEach",
    "StartStep",
    "StepCancelRequested",
    "StepCheck",
    "StepFailed",
    "StepSkipped",
    "StepSpec",
    "StepStarted",
    "StepState",
    "StepTaskChanged",
    "UnresolvedReference",
    "WorkflowCancelRequested",
    "WorkflowFinished",
    "WorkflowPlan",
    "WorkflowState",
    "WorkflowSubmission",
    "decide",
    "effect",
    "evolve",
    "field_path",
    "find_references",
    "fold",
    "initial_state",
    "lookup",
    "parameter_problems",
    "parse_reference",
    "parse_step_key",
    "parse_submission",
    "resolve",
    "set_aside",
    "step_key",
    "validate",
    "workflow_view",
]
