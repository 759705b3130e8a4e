"""Sending delayed tasks' dispatches when they are due (the ones that wait in the store).

A delayed task whose delay no delay queue fits (``domain.delays``) is stored with its
due time and no dispatch. This sweep, run by every aggregator replica, takes what is due
with one conditional write per batch (each task is taken by one replica, see
``taskdoc.operations.take_due``), publishes the dispatches with confirms, then marks
them sent. A replica that dies in between leaves its tasks to be taken again after
``resend_after_s``: at least once, and a duplicate dispatch is dropped by the claim.

It sleeps until the earliest due time it knows of, but never longer than ``interval_s``,
so a task submitted meanwhile starts at most that much late (0.5 s by default), and an
idle system costs one small indexed query per interval.
"""

from __future__ import annotations

import asyncio
import logging

from taskcore import metrics
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.envelope import Dispatch, TaskMessage
from taskcore.outbox import publish_dispatch
from taskcore.periodic import Periodic, seconds_until
from taskcore.taskdoc import ExecState, TaskDocuments
from taskcore.taskdoc.state import Doc

log = logging.getLogger(__name__)

BATCH = 500
RESEND_AFTER_S = 30.0


def dispatch_of(doc: Doc) -> Dispatch:
    """The dispatch a waiting task is due to get: the document says what to run."""
    state = ExecState.of(doc)
    return Dispatch(
        message=TaskMessage(
            task_id=doc["_id"],
            task_type=doc["task_type"],
            user_id=doc["user_id"],
            tier=doc.get("tier") or "paid",
            priority=int(doc.get("priority") or 0),
            parameters=doc.get("parameters") or {},
            dispatch=state.dispatch_no,
            retry_count=state.retry_count,
        )
    )


class DueDispatcher:
    def __init__(
        self,
        documents: TaskDocuments,
        publisher: Publisher,
        *,
        interval_s: float,
        resend_after_s: float = RESEND_AFTER_S,
    ) -> None:
        self.documents = documents
        self.publisher = publisher
        self.interval_s = interval_s
        self.resend_after_s = resend_after_s
        self._loop = Periodic("The due-dispatch sweep", interval_s)

    def stop(self) -> None:
        self._loop.stop()

    async def run_forever(self) -> None:
        await self._loop.run(self._sweep_then_wait)

    async def _sweep_then_wait(self) -> float:
        await self.sweep()
        return await self.until_next()

    async def until_next(self) -> float:
        """Seconds to sleep: until the earliest due time, at most one interval."""
        next_ms = await self.documents.next_due_ms()
        return seconds_until(next_ms, self.documents.clock(), self.interval_s)

    async def sweep(self) -> int:
        """Send every dispatch due now; returns how many were sent."""
        sent = 0
        while True:
            token, docs = await self.documents.take_due(BATCH, self.resend_after_s)
            if not docs:
                return sent
            results = await asyncio.gather(
                *(publish_dispatch(self.publisher, dispatch_of(d)) for d in docs),
                return_exceptions=True,
            )
            ok = [d["_id"] for d, r in zip(docs, results, strict=True) if r is None]
            await self.documents.settle_due(ok, token)
            sent += len(ok)
            metrics.DELAYED_DISPATCHED.inc(len(ok))
            if len(ok) < len(docs):
                log.warning(
                    "%d due dispatches could not be published; they go again in %.0f s.",
                    len(docs) - len(ok),
                    self.resend_after_s,
                )
                return sent
