"""Cancelling a task and every open task below it: the one procedure the API and the
executor share (docs/design.md, "Cancellation").

Each task is cancelled with the task document's conditional operations, so racing a
finishing executor, another cancel or a replay is safe:

1. nobody is running it (a dispatch outstanding, no live lease): close it at once; it
   never runs. A parent instead waits for its children (never terminal before them);
2. otherwise flag it (``task.cancel_requested``) and signal every executor on
   ``control.cancel``: its holder stops at its next checkpoint (a lost signal costs one
   heartbeat, which also reads the flag);
3. a parent's open children are cancelled the same way, level by level down the whole
   tree; the aggregator closes each parent once its children have settled.

A repeated cancel is cheap: a task already flagged whose children were all reached
(``cancel_cascaded``) costs one read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher, message
from taskcore.domain.events import EventType
from taskcore.messages.envelope import OutboxEntry
from taskcore.messages.topology import CANCEL_ROUTING_KEY, INTERNAL_EVENTS_EXCHANGE
from taskcore.outbox import deliver_or_defer
from taskcore.taskdoc import STATE_FIELDS, ExecState

log = logging.getLogger(__name__)

CANCEL_CHUNK = 50  # tasks cancelled concurrently, so a wide fan-out stops quickly


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # closed before it ran (a parent: now waits for its children)
    SIGNALLED = "signalled"  # running: asked to stop at its next checkpoint
    CLOSED = "closed"  # already finished, or already being cancelled: nothing to do


async def signal_cancel(publisher: Publisher, task_id: str) -> None:
    body = json.dumps({"task_id": task_id}).encode()
    await publisher.publish(
        INTERNAL_EVENTS_EXCHANGE, CANCEL_ROUTING_KEY, message(body, correlation_id=task_id)
    )


@dataclass
class Canceller:
    store: Store
    publisher: Publisher

    async def cancel(self, task_id: str, data: dict[str, Any]) -> CancelResult:
        """Cancel a task and its open descendants; ``data`` goes on every cancel event
        (``reason``, ``requested_by``)."""
        doc = await self.store.documents.get(task_id, STATE_FIELDS)
        if doc is None:
            return CancelResult.CLOSED
        state = ExecState.of(doc)
        result = await self._cancel_one(task_id, state, data)
        if state.has_children and not state.cancel_cascaded and not state.finished:
            await self._cascade([task_id], data)
        return result

    async def cancel_children(
        self, parent_id: str, data: dict[str, Any], *, exclude: str | None = None
    ) -> int:
        """Cancel a parent's open children (and theirs), leaving the parent itself alone;
        returns how many children were acted on."""
        return await self._cascade([parent_id], data, exclude=exclude, mark=False)

    async def _cascade(
        self,
        parent_ids: list[str],
        data: dict[str, Any],
        *,
        exclude: str | None = None,
        mark: bool = True,
    ) -> int:
        """Breadth first down the tree: every level is one read, however deep it goes."""
        acted, level = 0, parent_ids
        while level:
            children = [
                c for c in await self.store.documents.open_children(level) if c["_id"] != exclude
            ]
            for start in range(0, len(children), CANCEL_CHUNK):
                chunk = children[start : start + CANCEL_CHUNK]
                results = await asyncio.gather(
                    *(self._cancel_one(c["_id"], ExecState.of(c), data) for c in chunk)
                )
                acted += sum(r is not CancelResult.CLOSED for r in results)
            if mark:
                for parent_id in level:
                    await self.store.documents.mark_cascaded(parent_id)
            mark = True  # the parents below were flagged by this cancel
            level = [
                c["_id"]
                for c in children
                if ExecState.of(c).has_children and not ExecState.of(c).cancel_cascaded
            ]
        return acted

    async def close_cancelled(self, task_id: str) -> bool:
        """Close a flagged task whose dispatch nobody holds (an executor was handed its
        message instead of running it); whether this call closed it."""
        doc = await self.store.documents.get(task_id, STATE_FIELDS)
        if doc is None:
            return False
        state = ExecState.of(doc)
        result = await self._cancel_one(task_id, state, {"reason": "cancel requested"})
        if state.has_children and not state.cancel_cascaded:
            await self._cascade([task_id], {"reason": "parent cancelled"})
        return result is CancelResult.CANCELLED

    async def _cancel_one(
        self, task_id: str, state: ExecState, data: dict[str, Any]
    ) -> CancelResult:
        if state.finished or (state.cancel_requested and not state.open):
            return CancelResult.CLOSED  # over, or a flagged parent waiting for its children
        documents = self.store.documents
        if state.open and not state.held_at(documents.clock()):
            closing = EventType.AWAITING_CHILDREN if state.has_children else EventType.CANCELLED
            event = await documents.reserve_event(task_id, closing, _closing_data(closing, data))
            entry = OutboxEntry(event=event)
            if await documents.cancel_if_idle(task_id, entry, parent=state.has_children):
                await deliver_or_defer(self.publisher, [entry])
                return CancelResult.CANCELLED
        if not state.cancel_requested:
            # Running (or claimed since it was read): flag it; its holder stops it.
            event = await documents.reserve_event(task_id, EventType.CANCEL_REQUESTED, data)
            requested = OutboxEntry(event=event)
            before = await documents.request_cancel(task_id, requested)
            if before is None:
                return CancelResult.CLOSED
            await deliver_or_defer(self.publisher, [requested])
            state = before
        if state.open:
            await signal_cancel(self.publisher, task_id)
            return CancelResult.SIGNALLED
        return CancelResult.CLOSED


def _closing_data(closing: EventType, data: dict[str, Any]) -> dict[str, Any]:
    # A parent's run is over; its result is none, and why is the cancel's reason.
    return {"result": None, **data} if closing is EventType.AWAITING_CHILDREN else data
