"""Submitting a workflow: validate the whole of it, then store it as one task.

A workflow is a task of type ``workflow`` whose parameters are the validated submission;
its steps become its children as they start (``taskcore.workflows``). Every problem the
submission has is answered at once, each at its field path (``steps[2].depends_on[0]``),
so a client fixes them in one round. The quota counts the workflow and each of its steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import TypeAdapter, ValidationError
from taskcore.domain.ids import idempotent_task_id
from taskcore.domain.task import Tier
from taskcore.registry import TaskTypeRegistry
from taskcore.submission import NewTask, request_hash
from taskcore.workflows import (
    InvalidWorkflow,
    Problem,
    StepSpec,
    WorkflowPlan,
    initial_state,
    parameter_problems,
    parse_submission,
    workflow_view,
)
from taskcore.workflows.plan import WORKFLOW_TASK_TYPE

from taskcore_api import authz, storable
from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError
from taskcore_api.handlers.submit import Accepted, store_or_find
from taskcore_api.schemas import TeamId

_TEAM_ID: TypeAdapter[str] = TypeAdapter(TeamId)


def step_check(registry: TaskTypeRegistry) -> Any:
    """The registry's say on a step at submit (references set aside)."""

    def check(step: StepSpec, parameters: Any) -> list[Problem]:
        if not registry.submittable(step.task_type):
            return [Problem(("task_type",), "not a registered task type")]
        return parameter_problems(registry.get(step.task_type).Params, parameters)

    return check


def prepare(
    deps: Deps, principal: Principal, body: dict[str, Any], idempotency_key: str | None
) -> tuple[NewTask, int]:
    """The workflow's task and how many tasks its steps will be at least; or a 4xx."""
    unstorable = storable.problems(body, "body")  # team_id too: a lone surrogate is a 422
    if unstorable:
        raise ApiError(422, "invalid_workflow", "The workflow cannot be stored.", unstorable)
    body = dict(body)
    team_id = body.pop("team_id", None)
    if team_id is not None:
        try:
            team_id = _TEAM_ID.validate_python(team_id)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ApiError(
                422,
                "invalid_workflow",
                "The workflow is not valid.",
                [{"field": "team_id", "reason": reason}],
            ) from None
    authz.require_team(principal, team_id)
    try:
        submission = parse_submission(body, step_check(deps.registry))
    except InvalidWorkflow as exc:
        details = [p.as_detail() for p in exc.problems]
        raise ApiError(422, "invalid_workflow", "The workflow is not valid.", details) from exc
    plan = WorkflowPlan.of(submission)
    tier: Tier = "free" if principal.tier == "free" else "paid"
    parameters = submission.model_dump(mode="json")
    new = NewTask(
        user_id=principal.user_id,
        task_type=WORKFLOW_TASK_TYPE,
        parameters=parameters,
        priority=max((s.priority or 0 for s in submission.steps), default=0),
        max_attempts=3,
        tier=tier,
        request_hash=request_hash({"workflow": parameters, "team_id": team_id}),
        labels=dict(submission.labels or {}),
        team_id=team_id,
        derived={"workflow": workflow_view(plan, initial_state(plan.steps))},
    )
    if idempotency_key:
        new = replace(new, task_id=idempotent_task_id(principal.user_id, idempotency_key))
    return new, len(plan.steps)


async def submit_workflow(
    deps: Deps, principal: Principal, body: dict[str, Any], idempotency_key: str | None
) -> Accepted:
    new, steps = prepare(deps, principal, body, idempotency_key)
    keyed = idempotency_key is not None
    accepted = await store_or_find(deps, principal, new, keyed=keyed, also_counted=steps)
    return replace(accepted, task=authz.shown_task(principal, accepted.task))
