"""A task's live progress as Server-Sent Events.

The stream starts with the task as it stands (``event: state``, ``id:`` its version),
then sends each committed event (``event: task.progress`` etc., ``id:`` its sequence)
until the task ends, and closes. Live events come from the process's one subscription
(``LiveEvents``), so a stream costs one store read to start and none while it runs.

A client that reconnects with ``Last-Event-ID: N`` gets every logged event after
sequence N, then the live ones, each exactly once: a stream never sends a sequence at or
below one it has sent. To know the status after each of those events the stream folds
the task's lifecycle events up to N (progress events never change a status, and they
are the bulk of a log), never the whole log. A follower that fell behind, or missed
events across a broker reconnection, reads only the events after the last one it sent.

Whatever ``Last-Event-ID`` says, the stream closes once the task is terminal: a
terminal event closes it even when its sequence is at or below the client's, and a
stream that starts (or resyncs) on a finished task closes after what it has to send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette.event import ServerSentEvent
from taskcore import metrics
from taskcore.adapters.mongo import Doc, doc_to_event_dict, doc_to_task
from taskcore.domain.events import LIFECYCLE_EVENT_TYPES, TaskEvent
from taskcore.domain.evolve import evolve
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import Task
from taskcore.domain.upcasting import upcast

from taskcore_api import authz
from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.handlers.access import view_for
from taskcore_api.handlers.queries import load_events
from taskcore_api.live import Closed, Follower, LiveEvent, Resync
from taskcore_api.schemas import StreamEvent, TaskView
from taskcore_api.user_slots import Slot

# Tells EventSource clients how soon to reconnect after a dropped connection (ms).
RECONNECT_MS = 1000
# Logged events read per store round trip when catching up.
PAGE = 500


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


async def state_at(deps: Deps, task_id: str, sequence: int) -> Task | None:
    """The task's state after ``sequence`` as far as its status goes: the fold of its
    lifecycle events up to there (a handful, whatever the number of progress events)."""
    found = deps.store.events.find(
        {
            "task_id": task_id,
            "sequence": {"$lte": sequence},
            "type": {"$in": sorted(t.value for t in LIFECYCLE_EVENT_TYPES)},
        }
    ).sort("sequence", 1)
    state: Task | None = None
    async for doc in found:
        state = evolve(state, TaskEvent.model_validate(upcast(doc_to_event_dict(doc))))
    if state is not None:
        state = state.model_copy(update={"version": max(state.version, sequence)})
    return state


async def events_after(
    deps: Deps, task_id: str, state: Task | None, after: int
) -> AsyncIterator[tuple[StreamEvent, Task]]:
    """Logged events after sequence ``after``, page by page, each with the state it led to."""
    while True:
        page = await load_events(deps, task_id, after_sequence=after, limit=PAGE)
        for event in page:
            state = evolve(state, event)
            if state is not None:
                yield _from_log(event, state), state
            after = event.sequence
        if len(page) < PAGE:
            return


async def _is_terminal(deps: Deps, task_id: str) -> bool:
    doc = await deps.store.tasks.find_one({"_id": task_id}, {"status": 1})
    return doc is not None and TaskStatus(doc["status"]).is_terminal


class _Position:
    """What the stream has sent: the last sequence and the state after it."""

    def __init__(self, last: int, state: Task | None) -> None:
        self.last = last
        self.state = state

    @property
    def terminal(self) -> bool:
        return self.state is not None and self.state.status.is_terminal

    def sent(self, event: StreamEvent, state: Task | None = None) -> None:
        self.last = event.sequence
        if state is not None:
            self.state = state
        elif self.state is not None:
            self.state = self.state.model_copy(
                update={"status": event.status, "version": event.sequence}
            )


async def task_stream(
    deps: Deps,
    principal: Principal,
    follower: Follower,
    current: Doc,
    last_event_id: int | None,
    slot: Slot | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The stream of ``follower``'s task, subscribed before ``current`` (the task's document
    as it was read) so that nothing committed after that read can be missed. Ends the
    subscription (and frees the caller's stream slot) when it ends."""
    task_id = follower.task_id
    metrics.SSE_CLIENTS.inc()
    try:
        if last_event_id is None:
            view = view_for(principal, current)
            yield state_sse(view)
            at = _Position(view.version, doc_to_task(current))
        else:
            at = _Position(last_event_id, await state_at(deps, task_id, last_event_id))
            async for item in _catch_up(deps, principal, task_id, at):
                yield item
            if not at.terminal and doc_to_task(current).status.is_terminal:
                return  # finished, and the client has seen at least as far as its end
        while not at.terminal:
            notice = await follower.next()
            if notice is None or isinstance(notice, Closed):
                return
            if isinstance(notice, Resync):
                async for item in _catch_up(deps, principal, task_id, at):
                    yield item
                if not at.terminal and await _is_terminal(deps, task_id):
                    return
            elif notice.sequence > at.last:
                event = _from_live(notice)
                yield event_sse(authz.shown_stream_event(principal, event))
                at.sent(event)
            elif notice.terminal:
                return  # the client is past the final event: nothing more will come
    finally:
        deps.live.unsubscribe(follower)
        metrics.SSE_CLIENTS.dec()
        if slot is not None:
            slot.release()


async def _catch_up(
    deps: Deps, principal: Principal, task_id: str, at: _Position
) -> AsyncIterator[ServerSentEvent]:
    async for event, state in events_after(deps, task_id, at.state, at.last):
        yield event_sse(authz.shown_stream_event(principal, event))
        at.sent(event, state)
