"""A task's live progress as Server-Sent Events.

The stream starts with the task as it stands (``event: state``, ``id:`` its version),
then sends each committed event (``event: task.progress`` etc., ``id:`` its sequence)
until a terminal one, and ends. Live events come from the process's one subscription
(``LiveEvents``), so a stream costs one store read to start and none while it runs.

A client that reconnects with ``Last-Event-ID: N`` gets every logged event after
sequence N from the event log first, then the live ones, each exactly once: a stream
never sends a sequence at or below one it has sent. The same replay heals a follower
that fell behind or missed events across a broker reconnection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette.event import ServerSentEvent
from taskcore import metrics
from taskcore.adapters.mongo import Doc
from taskcore.domain.events import TaskEvent
from taskcore.domain.evolve import evolve
from taskcore.domain.task import Task

from taskcore_api.deps import Deps
from taskcore_api.handlers.access import view_of
from taskcore_api.handlers.queries import load_events
from taskcore_api.live import Closed, Follower, LiveEvent, Resync
from taskcore_api.schemas import StreamEvent, TaskView

# Tells EventSource clients how soon to reconnect after a dropped connection (ms).
RECONNECT_MS = 1000


def state_sse(view: TaskView) -> ServerSentEvent:
    return ServerSentEvent(
        data=view.model_dump_json(), event="state", id=str(view.version), retry=RECONNECT_MS
    )


def event_sse(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.model_dump_json(), event=event.type, id=str(event.sequence))


def _from_live(e: LiveEvent) -> StreamEvent:
    return StreamEvent(
        event_id=e.event_id,
        task_id=e.task_id,
        sequence=e.sequence,
        type=e.type,
        occurred_at=e.occurred_at,
        data=e.data,
        status=e.status,
    )


def _from_log(e: TaskEvent, state: Task) -> StreamEvent:
    return StreamEvent(
        event_id=e.event_id,
        task_id=e.task_id,
        sequence=e.sequence,
        type=e.type.value,
        occurred_at=e.occurred_at,
        data=e.data,
        status=state.status,
    )


async def replay(deps: Deps, task_id: str, after: int) -> tuple[list[StreamEvent], bool]:
    """Logged events after sequence ``after``, each with the status it led to, and whether
    the task is terminal by its log."""
    state: Task | None = None
    missed: list[StreamEvent] = []
    for event in await load_events(deps, task_id):
        state = evolve(state, event)
        if event.sequence > after and state is not None:
            missed.append(_from_log(event, state))
    return missed, state is not None and state.status.is_terminal


async def task_stream(
    deps: Deps, follower: Follower, current: Doc, last_event_id: int | None
) -> AsyncIterator[ServerSentEvent]:
    """The stream of ``follower``'s task, subscribed before ``current`` (the task's document
    as it was read) so that nothing committed after that read can be missed. Ends the
    subscription when it ends."""
    task_id = follower.task_id
    metrics.SSE_CLIENTS.inc()
    try:
        if last_event_id is None:
            view = view_of(current)
            yield state_sse(view)
            last, done = view.version, view.status.is_terminal
        else:
            last = last_event_id
            missed, done = await replay(deps, task_id, last)
            for item in missed:
                yield event_sse(item)
                last = item.sequence
        while not done:
            notice = await follower.next()
            if notice is None or isinstance(notice, Closed):
                return
            if isinstance(notice, Resync):
                missed, done = await replay(deps, task_id, last)
                for item in missed:
                    yield event_sse(item)
                    last = item.sequence
            elif notice.sequence > last:
                yield event_sse(_from_live(notice))
                last, done = notice.sequence, notice.terminal
    finally:
        deps.live.unsubscribe(follower)
        metrics.SSE_CLIENTS.dec()
