"""Removing expired task trees, their event logs and dead letters, a bounded batch at a
time, off the hot path.

Each pass reads at most ``batch`` expired finished roots (an indexed range on
``finished_ms``), walks each tree level by level on the ``parent_task_id`` index, keeps
whole any tree ``policy.removable_trees`` refuses (something in it is unfinished), and
deletes the rest in chunks: dead letters, events and descendants first, the root last,
so a pass cut short leaves the root to be found again. Deletes are idempotent, so
replicas sweeping at once only repeat each other's work. Between full batches it pauses,
so the store keeps serving the hot path; when a pass finds nothing it sleeps
``interval_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import TypeAdapter

from taskcore import metrics
from taskcore.adapters.mongo import Doc, Store, now_ms
from taskcore.domain.clock import UtcDatetime, to_ms
from taskcore.domain.status import TaskStatus
from taskcore.periodic import Periodic
from taskcore.retention.policy import RetentionPolicy, TaskRecord, removable_trees
from taskcore.taskdoc import STATE_FIELDS, ExecState

log = logging.getLogger(__name__)

CHUNK = 1000  # ids per delete
PAUSE_BETWEEN_BATCHES_S = 1.0
TERMINAL = [s.value for s in TaskStatus if s.is_terminal]
_RECORD_FIELDS: Doc = {
    "status": 1,
    "parent_task_id": 1,
    "finished_ms": 1,
    "finished_at": 1,
    **STATE_FIELDS,
}
# finished_at comes back as a datetime, or as a string where the stand-in stored a $set one.
_UTC: TypeAdapter[UtcDatetime] = TypeAdapter(UtcDatetime)


class RetentionSweeper:
    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        *,
        interval_s: float,
        batch: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self._loop = Periodic("The retention sweep", interval_s)

    def stop(self) -> None:
        self._loop.stop()

    async def run_forever(self) -> None:
        await self._loop.run(self._sweep_then_wait)

    async def _sweep_then_wait(self) -> float:
        if await self.sweep_batch() >= self.batch:
            return PAUSE_BETWEEN_BATCHES_S  # more to do, after a breath
        return self.interval_s

    async def sweep(self) -> int:
        """Remove every expired tree now, batch after batch; how many trees went."""
        removed = 0
        while (n := await self.sweep_batch()) > 0:
            removed += n
        return removed

    async def sweep_batch(self) -> int:
        """One bounded pass; returns how many roots it looked at and settled."""
        await self._backfill()
        now = self.clock()
        roots: list[Doc] = []
        for statuses, keep in self.policy.groups():
            cutoff = now - int(keep.total_seconds() * 1000)
            query = {
                "finished_ms": {"$lte": cutoff},
                "parent_task_id": None,
                "status": {"$in": [s.value for s in statuses]},
            }
            found = self.store.tasks.find(query, _RECORD_FIELDS).limit(self.batch)
            roots += await found.to_list(None)
        done = 0
        for root in roots[: self.batch]:
            members = await self._tree(root)
            if removable_trees(self.policy, [_record(root["_id"], d) for d in members], now):
                await self._remove(root["_id"], [d["_id"] for d in members])
                done += 1
            else:
                log.info("Retention keeps task %s: its tree is not all finished.", root["_id"])
        return done

    async def _tree(self, root: Doc) -> list[Doc]:
        """The root and every task below it, one read per level."""
        members, level = [root], [root["_id"]]
        while level:
            children = await self.store.tasks.find(
                {"parent_task_id": {"$in": level}}, _RECORD_FIELDS
            ).to_list(None)
            members += children
            level = [c["_id"] for c in children]
        return members

    async def _remove(self, root_id: str, ids: list[str]) -> None:
        below = [i for i in ids if i != root_id]
        for start in range(0, len(below), CHUNK):
            await self._delete(below[start : start + CHUNK])
        await self._delete([root_id])  # last: a pass cut short finds the tree again

    async def _delete(self, ids: list[str]) -> None:
        dead = await self.store.dead_letters.delete_many({"task_id": {"$in": ids}})
        events = await self.store.events.delete_many({"task_id": {"$in": ids}})
        tasks = await self.store.tasks.delete_many({"_id": {"$in": ids}})
        metrics.RETENTION_REMOVED.labels("dead_letters").inc(dead.deleted_count)
        metrics.RETENTION_REMOVED.labels("events").inc(events.deleted_count)
        metrics.RETENTION_REMOVED.labels("tasks").inc(tasks.deleted_count)

    async def _backfill(self) -> None:
        """Finished tasks folded before ``finished_ms`` existed get it (a batch a pass)."""
        query = {"status": {"$in": TERMINAL}, "finished_ms": {"$exists": False}}
        async for doc in self.store.tasks.find(query, {"finished_at": 1}).limit(self.batch):
            finished = _finished_ms(doc.get("finished_at"))
            await self.store.tasks.update_one(
                {"_id": doc["_id"], "finished_ms": {"$exists": False}},
                {"$set": {"finished_ms": finished}},
            )


def _finished_ms(value: object) -> int | None:
    if value is None:
        return None
    return to_ms(value if isinstance(value, datetime) else _UTC.validate_python(value))


def _record(root_id: str, doc: Doc) -> TaskRecord:
    finished = doc.get("finished_ms")
    return TaskRecord(
        id=doc["_id"],
        root_id=root_id,
        parent_id=doc.get("parent_task_id"),
        status=TaskStatus(doc["status"]),
        finished_ms=finished if isinstance(finished, int) else None,
        settled=ExecState.of(doc).finished,
    )
