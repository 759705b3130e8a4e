"""The watchdog: closes parents nobody closed, and recounts counters nobody recounted.

Normally a parent is recounted and closed right after the batch that folds its last
child or its own ``task.awaiting_children``. A replica can die between acking that batch
and the debounced recount; then the parent's ``subtasks_marked_ms`` stamp stays, and a
parent left ``awaiting_children`` with every child terminal stays open. Every sweep picks
up both. Safe in several replicas at once: every write it makes is conditional.
"""

from __future__ import annotations

import logging

from pydantic import TypeAdapter
from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store, now_ms
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.clock import UtcDatetime, to_ms
from taskcore.periodic import Periodic
from taskcore.taskdoc import ExecState

from taskcore_aggregator.parents import WorkflowAdvancer, refresh_parent

log = logging.getLogger(__name__)

SWEEP_LIMIT = 500
# updated_at comes back as a datetime, or as a string where the stand-in stored a $set one.
_UTC: TypeAdapter[UtcDatetime] = TypeAdapter(UtcDatetime)


class Watchdog:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        interval_s: float,
        stale_s: float,
        workflows: WorkflowAdvancer | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.workflows = workflows
        self.interval_s = interval_s
        self.stale_ms = int(stale_s * 1000)
        self._loop = Periodic("The watchdog's sweep", interval_s)

    def stop(self) -> None:
        """Ask ``run_forever`` to return after the sweep in hand."""
        self._loop.stop()

    async def run_forever(self) -> None:
        await self._loop.run(self._sweep_then_wait)

    async def _sweep_then_wait(self) -> float:
        closed = await self.sweep()
        if closed:
            log.warning("The watchdog closed %d parents that were left open.", closed)
        return self.interval_s

    async def sweep(self) -> int:
        """One pass; returns how many parents it closed."""
        awaiting = await self.store.documents.awaiting_children(SWEEP_LIMIT)
        stale = await self.store.documents.stale_recounts(now_ms() - self.stale_ms, SWEEP_LIMIT)
        ids = {d["_id"] for d in awaiting} | set(stale)
        metrics.PARENTS_AWAITING_OLDEST_SECONDS.set(oldest_quiet_seconds(awaiting, now_ms()))
        closed = 0
        for parent_id in sorted(ids):
            closed += await refresh_parent(self.store, self.publisher, parent_id, self.workflows)
        return closed


def oldest_quiet_seconds(parents: list[Doc], now: int) -> float:
    """How long the quietest waiting parent has gone without a change to it or its counters."""
    quiet = [
        (
            now
            - max(
                to_ms(_UTC.validate_python(d["updated_at"])),
                ExecState.of(d).subtasks_changed_ms or 0,
            )
        )
        / 1000
        for d in parents
        if d.get("updated_at") is not None
    ]
    return max([0.0, *quiet])


def _changed_ms(doc: Doc) -> int:
    return ExecState.of(doc).subtasks_changed_ms or 0
