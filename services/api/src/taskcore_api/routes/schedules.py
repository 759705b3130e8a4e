"""Schedule routes: create, list, read, pause, resume, delete (``/v1/schedules``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from taskcore_api import authz
from taskcore_api.auth import Principal, authenticate
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers import schedules
from taskcore_api.schedule_schemas import ScheduleList, ScheduleRequest, ScheduleView
from taskcore_api.schemas import MAX_TEAM_ID

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], responses=errors(401, 503))

ScheduleId = Annotated[str, Path(min_length=1, max_length=200, description="The schedule's id.")]


@router.post(
    "",
    status_code=201,
    response_model=ScheduleView,
    summary="Create a schedule",
    description=(
        "Creates a task from `task` at each due time of `cron` in `timezone`, exactly one "
        "per due time however many aggregators run (each such task names it with "
        "`schedule_id` and `scheduled_for`). An invalid expression or time zone, or a task "
        "that would not be accepted as a submission, is a 422 naming the field; a "
        "`task.team_id` that is not one of yours is a 403."
    ),
    responses=errors(403, 409, 422),
)
async def create_schedule(
    body: ScheduleRequest,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> ScheduleView:
    authz.require_full_credential(principal)
    return await schedules.create(deps, principal, body)


@router.get(
    "",
    response_model=ScheduleList,
    summary="List schedules, newest first",
    description="Yours and your teams' (an admin sees everyone's).",
    responses=errors(403, 422),
)
async def list_schedules(
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    team_id: Annotated[
        str | None, Query(min_length=1, max_length=MAX_TEAM_ID, description="One of your teams.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ScheduleList:
    authz.require_full_credential(principal)
    return await schedules.list_schedules(deps, principal, team_id, limit, cursor)


@router.get(
    "/{schedule_id}", response_model=ScheduleView, summary="Read a schedule", responses=errors(404)
)
async def get_schedule(
    schedule_id: ScheduleId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> ScheduleView:
    authz.require_full_credential(principal)
    return await schedules.get(deps, principal, schedule_id)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a schedule",
    description="No more tasks are created; the tasks it created are left as they are.",
    responses=errors(404),
)
async def delete_schedule(
    schedule_id: ScheduleId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> Response:
    authz.require_full_credential(principal)
    await schedules.delete(deps, principal, schedule_id)
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/pause",
    response_model=ScheduleView,
    summary="Pause a schedule",
    description="It creates no task until resumed.",
    responses=errors(404),
)
async def pause_schedule(
    schedule_id: ScheduleId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> ScheduleView:
    authz.require_full_credential(principal)
    return await schedules.pause(deps, principal, schedule_id)


@router.post(
    "/{schedule_id}/resume",
    response_model=ScheduleView,
    summary="Resume a schedule",
    description=(
        "With `catch_up: one`, a due time missed while paused runs once, now; with "
        "`none`, the schedule goes on from its next due time."
    ),
    responses=errors(404),
)
async def resume_schedule(
    schedule_id: ScheduleId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> ScheduleView:
    authz.require_full_credential(principal)
    return await schedules.resume(deps, principal, schedule_id)
