"""Live progress of one task over Server-Sent Events, and the tokens browsers open it with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse

from taskcore_api import authz
from taskcore_api.auth import Principal, authenticate
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers.access import ACCESS_FIELDS, VIEW_FIELDS, visible_task_doc
from taskcore_api.handlers.queries import MAX_SEQUENCE
from taskcore_api.handlers.stream import task_stream

router = APIRouter(prefix="/v1", tags=["tasks"], responses=errors(401, 503))

_DESCRIPTION = """\
Server-Sent Events. The first event is `event: state` with the task (a `TaskView`) and
`id:` its version; then one event per change, `event:` the event type (`task.started`,
`task.progress`, `task.completed`...), `id:` its sequence and `data:` a `StreamEvent`
(see the schemas),
until the terminal event, after which the stream closes. Keep-alive comments come every
`TASKCORE_SSE_PING_SECONDS` (15 s by default). Reconnect with `Last-Event-ID` to resume
without gaps or repeats; the stream closes once the task has ended, whatever that id.
A browser's EventSource, which cannot send headers, passes `?token=` from
`POST /v1/tasks/{task_id}/stream-token` instead. At most `TASKCORE_MAX_STREAMS_PER_USER`
open streams per user and API process (100 by default): more is a 429."""

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The task's id.")]


@router.get(
    "/tasks/{task_id}/stream",
    summary="Follow a task's live progress",
    description=_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "An event stream that ends after the task's terminal event.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'event: state\nid: 1\ndata: {"id": "…", "status": "QUEUED", …}\n\n',
                }
            },
        },
        **errors(404, 422, 429),
    },
)
async def stream_task(
    task_id: TaskId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=MAX_SEQUENCE,
            description="Resume after this sequence.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        Query(max_length=4096, description="A stream token, instead of the Authorization header."),
    ] = None,
) -> EventSourceResponse:
    slot = deps.stream_slots.acquire(principal.user_id)
    follower = deps.live.subscribe(task_id)
    try:
        current = await visible_task_doc(deps, principal, task_id, VIEW_FIELDS)
    except BaseException:
        deps.live.unsubscribe(follower)
        slot.release()
        raise
    return EventSourceResponse(
        task_stream(deps, principal, follower, current, last_event_id, slot),
        ping=deps.settings.sse_ping_seconds,
        send_timeout=30,
    )


class StreamToken(BaseModel):
    token: str = Field(description="Pass as `?token=` to this task's stream.")
    expires_at: datetime = Field(description="Five minutes after it was issued.")


@router.post(
    "/tasks/{task_id}/stream-token",
    response_model=StreamToken,
    summary="A token that opens this task's stream from a browser",
    description=(
        "For EventSource, which cannot send an Authorization header: "
        "`new EventSource('/v1/tasks/ID/stream?token=' + token)`. The token is valid for "
        "5 minutes, for this task's stream only; any caller who may see the task gets one."
    ),
    responses=errors(404, 422),
)
async def stream_token(
    task_id: TaskId,
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
) -> StreamToken:
    authz.require_full_credential(principal)
    await visible_task_doc(deps, principal, task_id, ACCESS_FIELDS)
    token, expires_at = deps.stream_tokens.issue(principal, task_id)
    return StreamToken(token=token, expires_at=expires_at)
