"""Live progress of one task over Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path
from sse_starlette.sse import EventSourceResponse

from taskcore_api.auth import Principal, authenticate
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers.access import visible_task_doc
from taskcore_api.handlers.stream import task_stream

router = APIRouter(prefix="/v1", tags=["tasks"], responses=errors(401, 503))

_DESCRIPTION = """\
Server-Sent Events. The first event is `event: state` with the task (a `TaskView`) and
`id:` its version; then one event per change, `event:` the event type (`task.started`,
`task.progress`, `task.completed`...), `id:` its sequence and `data:` a `StreamEvent`
(see the schemas),
until the terminal event, after which the stream closes. Keep-alive comments come every
`TASKCORE_SSE_PING_SECONDS` (15 s by default). Reconnect with `Last-Event-ID` to resume
without gaps or repeats."""


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
        **errors(404, 422),
    },
)
async def stream_task(
    task_id: Annotated[str, Path(min_length=1, max_length=200)],
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, description="Resume after this sequence."),
    ] = None,
) -> EventSourceResponse:
    follower = deps.live.subscribe(task_id)
    try:
        current = await visible_task_doc(deps, principal, task_id)
    except BaseException:
        deps.live.unsubscribe(follower)
        raise
    return EventSourceResponse(
        task_stream(deps, follower, current, last_event_id),
        ping=deps.settings.sse_ping_seconds,
        send_timeout=30,
    )
