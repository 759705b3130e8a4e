"""A valid workflow, with what the state machine asks of it precomputed once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskcore.workflows.graph import upstream
from taskcore.workflows.problems import InvalidWorkflow
from taskcore.workflows.references import ReferencePath, reference_in
from taskcore.workflows.submission import OnFailure, StepSpec, WorkflowSubmission
from taskcore.workflows.validation import validate

WORKFLOW_TASK_TYPE = "workflow"


@dataclass(frozen=True)
class PlannedStep:
    spec: StepSpec
    upstream: frozenset[str]  # every step it depends on, directly or transitively
    for_each: ReferencePath | None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def depends_on(self) -> tuple[str, ...]:
        return self.spec.depends_on


@dataclass(frozen=True)
class WorkflowPlan:
    """A submission known to be valid, its steps in submission order.

    Build it with ``WorkflowPlan.of``; the runtime may rebuild it whenever it needs to
    (from the workflow task's parameters, say): the same submission gives an equal plan.
    """

    submission: WorkflowSubmission
    steps: Mapping[str, PlannedStep]

    @classmethod
    def of(cls, submission: WorkflowSubmission) -> WorkflowPlan:
        """The plan of ``submission``; ``InvalidWorkflow`` if its structure has problems
        (the registry's checks are the API's, at submit)."""
        problems = validate(submission)
        if problems:
            raise InvalidWorkflow(problems)
        above = upstream({s.id: s.depends_on for s in submission.steps})
        steps = {
            s.id: PlannedStep(s, above[s.id], _for_each_path(s.for_each)) for s in submission.steps
        }
        return cls(submission, steps)

    @property
    def name(self) -> str | None:
        return self.submission.name

    @property
    def on_failure(self) -> OnFailure:
        return self.submission.on_failure


def _for_each_path(for_each: Any) -> ReferencePath | None:
    return None if for_each is None else reference_in(for_each)
