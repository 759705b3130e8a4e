"""Task routes: submit (one or a batch), read, list, the event log, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from taskcore.domain.status import TaskStatus

from taskcore_api import authz
from taskcore_api.auth import Principal, authenticate
from taskcore_api.batch_body import decode_batch
from taskcore_api.body_limit import BATCH_LIMIT, DEFAULT_LIMIT
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers import access, batch, cancel, queries, submit
from taskcore_api.labels import parse_label_filters
from taskcore_api.schemas import (
    MAX_BATCH,
    MAX_IDEMPOTENCY_KEY,
    MAX_LABELS,
    MAX_TEAM_ID,
    BatchResponse,
    EventList,
    TaskList,
    TaskSubmission,
    TaskView,
)

router = APIRouter(prefix="/v1", tags=["tasks"], responses=errors(401, 503))

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The task's id.")]


@router.post(
    "/tasks",
    status_code=202,
    response_model=TaskView,
    summary="Submit a task",
    description=(
        "Validates the parameters against the type's schema and queues the task. With "
        "`Idempotency-Key`, a retried submission (same key, same body, same user) returns "
        "the same task; the same key with another body is a 409. With `wait`, answers "
        "200 with the finished task if it ends within that many seconds, else 202 with "
        "the task as it stands (at most `TASKCORE_MAX_WAITS_PER_USER` such waits per user "
        f"at once, else 429). Bodies over {DEFAULT_LIMIT} bytes are a 413. A `team_id` "
        "that is not one of yours is a 403."
    ),
    responses={
        200: {"model": TaskView, "description": "With `wait`: the task finished in time."},
        **errors(400, 403, 409, 413, 422, 429),
    },
)
async def submit_task(
    body: TaskSubmission,
    response: Response,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            description="Makes a retried submission return the same task (per user).",
        ),
    ] = None,
    wait: Annotated[
        float | None,
        Query(
            ge=0,
            le=submit.MAX_WAIT_SECONDS,
            description="Seconds to wait for the task to finish (at most 60).",
        ),
    ] = None,
) -> TaskView:
    accepted = await submit.submit_one(deps, principal, body, idempotency_key, wait)
    if wait and accepted.finished:
        response.status_code = 200
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return accepted.task


@router.post(
    "/tasks/batch",
    response_model=BatchResponse,
    summary="Submit up to 1000 tasks",
    description=(
        "Each item is validated on its own and answered in request order: one bad item "
        "does not sink the others. Quotas count the batch's new tasks together, and a "
        f"batch over quota is refused whole (429). Bodies over {BATCH_LIMIT} bytes are a "
        f"413; items are decoded one by one, and item {MAX_BATCH + 1} ends the request "
        "with a 422."
    ),
    responses=errors(400, 413, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}
            },
        }
    },
)
async def submit_batch(
    request: Request,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> BatchResponse:
    # Read here rather than declared as a parameter: FastAPI would decode the whole body
    # before counting its items (see batch_body).
    items = decode_batch(await request.body(), MAX_BATCH)
    return await batch.submit_batch(deps, principal, items)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskView,
    summary="Read a task",
    responses=errors(404, 422),
)
async def get_task(
    task_id: TaskId, principal: Principal = Depends(authenticate), deps: Deps = Depends(get_deps)
) -> TaskView:
    return await access.get_task(deps, principal, task_id)


@router.get(
    "/tasks",
    response_model=TaskList,
    summary="List tasks, newest first",
    description=(
        "Your tasks and your teams' (an admin sees everyone's), filtered, newest first. "
        "`label=key:value` (repeatable: all must match) filters by labels, `team_id` "
        "narrows to one of your teams (another team is a 403). Follow `next_cursor` for "
        "the next page: each task that existed when the listing began is returned "
        "exactly once, however many are submitted meanwhile."
    ),
    responses=errors(403, 422),
)
async def list_tasks(
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    status: Annotated[list[TaskStatus] | None, Query(description="One or more statuses.")] = None,
    task_type: Annotated[str | None, Query(max_length=200)] = None,
    parent_task_id: Annotated[str | None, Query(max_length=200)] = None,
    created_after: Annotated[datetime | None, Query(description="Exclusive.")] = None,
    created_before: Annotated[datetime | None, Query(description="Exclusive.")] = None,
    user_id: Annotated[
        str | None, Query(max_length=200, description="Admins only; ignored for users.")
    ] = None,
    team_id: Annotated[
        str | None, Query(min_length=1, max_length=MAX_TEAM_ID, description="One of your teams.")
    ] = None,
    label: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_LABELS,
            description="`key:value`; repeat for more (all must match).",
            examples=["project_id:42"],
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> TaskList:
    filters = queries.TaskFilters(
        status=list(status) if status else None,
        task_type=task_type,
        parent_task_id=parent_task_id,
        created_after=created_after,
        created_before=created_before,
        user_id=user_id,
        team_id=team_id,
        label_terms=parse_label_filters(label or []),
    )
    return await queries.list_tasks(deps, principal, filters, limit, cursor)


@router.get(
    "/tasks/{task_id}/events",
    response_model=EventList,
    summary="A task's event log, in order",
    responses=errors(404, 422),
)
async def list_events(
    task_id: TaskId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> EventList:
    return await queries.list_events(deps, principal, task_id, limit, cursor)


@router.post(
    "/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskView,
    summary="Cancel a task",
    description=(
        "A queued task never runs; a running task is signalled and stops at its next "
        "checkpoint; a parent cancels its open subtasks and ends once they have. "
        "Cancelling a finished task is a 409."
    ),
    responses=errors(404, 409, 422),
)
async def cancel_task(
    task_id: TaskId, principal: Principal = Depends(authenticate), deps: Deps = Depends(get_deps)
) -> TaskView:
    authz.require_full_credential(principal)
    return await cancel.cancel_task(deps, principal, task_id)
