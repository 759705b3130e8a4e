"""Workflow submission. A workflow is then a task like any other: read, list, follow and
cancel it through the task routes (``task_type=workflow``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from taskcore.workflows import WorkflowSubmission

from taskcore_api.auth import Principal, authenticate
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers import workflows
from taskcore_api.schemas import MAX_IDEMPOTENCY_KEY, TaskView

router = APIRouter(prefix="/v1", tags=["workflows"], responses=errors(401, 503))

_DESCRIPTION = """\
Steps with `depends_on`, references to upstream results anywhere in a step's
parameters (`{"$ref": "parse.result.chapters[0]"}`; `{"$literal": v}` passes `v`
through unread), and `for_each` fan-out over a referenced list (inside such a step,
`{"$ref": "item..."}` is the element). At most 100 steps. Every problem is answered at
once, each at its field path (`steps[2].depends_on[0]`). 202 with the workflow's task;
its `workflow` field shows each step (`PENDING` until it starts). Optional `team_id`
shares it with a team. The quota counts the workflow and each of its steps.
"""


@router.post(
    "/workflows",
    status_code=202,
    response_model=TaskView,
    summary="Submit a workflow",
    description=_DESCRIPTION,
    responses=errors(400, 403, 409, 413, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [{"$ref": "#/components/schemas/WorkflowSubmission"}],
                        "properties": {"team_id": {"type": "string"}},
                    }
                }
            },
        }
    },
)
async def submit_workflow(
    body: Annotated[dict[str, Any], Body()],
    response: Response,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            description="Makes a retried submission return the same workflow (per user).",
        ),
    ] = None,
) -> TaskView:
    accepted = await workflows.submit_workflow(deps, principal, body, idempotency_key)
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return accepted.task


EXTRA_SCHEMAS = (WorkflowSubmission,)
