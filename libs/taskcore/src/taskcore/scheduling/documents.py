"""The ``schedules`` collection: one document per schedule, and its conditional writes.

Times that queries compare are epoch milliseconds (docs/design.md, "Times in the store").
A document holds what the API shows (``name``, ``cron``, ``timezone``, ``task`` as
submitted, ``overlap``, ``catch_up``, ``paused``, the owner and team) and what the firer
needs: ``run`` (the task to create, resolved and validated when the schedule was made),
``next_run_ms``, ``last_run_ms``, ``last_task_id``, and ``firing`` while a run it
decided on has not been confirmed created (``{due_ms, task_id, since_ms}``).

Exactly one task per due time: advancing ``next_run_ms`` is conditional on the value
read, so of any number of replicas one decides each due time, and the task's id is
derived from the schedule and the due time, so even a repeated insert (a replica that
died after deciding, see ``stale_firings``) creates it once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from taskcore.domain.clock import to_ms
from taskcore.domain.ids import idempotent_task_id
from taskcore.scheduling.cron import Cron
from taskcore.scheduling.plan import CatchUp, Overlap
from taskcore.submission import NewTask

Doc = dict[str, Any]


def from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def schedule_task_id(schedule_id: str, due_ms: int) -> str:
    """The one task a schedule's due time may create."""
    return idempotent_task_id(f"schedule:{schedule_id}", str(due_ms))


def list_key(created_ms: int, schedule_id: str) -> str:
    """Newest last, unique: listings sort and page by this one indexed string."""
    return f"{max(0, created_ms):016d}:{schedule_id}"


@dataclass(frozen=True)
class Schedule:
    """A schedule document, typed."""

    id: str
    user_id: str
    team_id: str | None
    name: str
    cron: Cron
    overlap: Overlap
    catch_up: CatchUp
    paused: bool
    run: Doc  # NewTask fields, less the ids and times
    next_run_ms: int | None
    last_task_id: str | None
    firing: Doc | None

    @classmethod
    def of(cls, doc: Doc) -> Schedule:
        return cls(
            id=doc["_id"],
            user_id=doc["user_id"],
            team_id=doc.get("team_id"),
            name=doc["name"],
            cron=Cron.parse(doc["cron"], doc.get("timezone") or "UTC"),
            overlap=Overlap(doc.get("overlap") or Overlap.ALLOW),
            catch_up=CatchUp(doc.get("catch_up") or CatchUp.NONE),
            paused=bool(doc.get("paused")),
            run=doc["run"],
            next_run_ms=doc.get("next_run_ms"),
            last_task_id=doc.get("last_task_id"),
            firing=doc.get("firing") or None,
        )

    def new_task(self, due_ms: int) -> NewTask:
        """The task for one due time (a template's delay counts from the due time)."""
        run = self.run
        due = from_ms(due_ms)
        assert due is not None
        delay = run.get("delay_seconds")
        starts = due if not delay else datetime.fromtimestamp(due_ms / 1000 + delay, UTC)
        return NewTask(
            task_id=schedule_task_id(self.id, due_ms),
            user_id=self.user_id,
            task_type=run["task_type"],
            parameters=run.get("parameters") or {},
            priority=int(run.get("priority") or 0),
            max_attempts=int(run.get("max_attempts") or 3),
            tier=run.get("tier") or "paid",
            subtask_policy=run.get("subtask_policy") or "collect_all",
            failure_threshold=run.get("failure_threshold"),
            labels=run.get("labels") or {},
            team_id=self.team_id,
            scheduled_for=starts,
            schedule_id=self.id,
            timeout_seconds=run.get("timeout_seconds"),
        )


def new_schedule_document(
    *,
    user_id: str,
    team_id: str | None,
    name: str,
    cron: str,
    timezone: str,
    task: Doc,
    run: Doc,
    overlap: Overlap,
    catch_up: CatchUp,
    next_run: datetime | None,
    now: datetime,
) -> Doc:
    schedule_id = uuid.uuid4().hex
    now_ms = to_ms(now)
    return {
        "_id": schedule_id,
        "user_id": user_id,
        "team_id": team_id,
        "name": name,
        "cron": cron,
        "timezone": timezone,
        "task": task,
        "run": run,
        "overlap": overlap.value,
        "catch_up": catch_up.value,
        "paused": False,
        "next_run_ms": None if next_run is None else to_ms(next_run),
        "last_run_ms": None,
        "last_task_id": None,
        "created_at": now,
        "created_ms": now_ms,
        "updated_ms": now_ms,
        "list_key": list_key(now_ms, schedule_id),
    }


class ScheduleDocuments:
    def __init__(self, collection: AsyncCollection[Doc], clock: Callable[[], int]) -> None:
        self.collection = collection
        self.clock = clock

    async def ensure_indexes(self) -> None:
        await self.collection.create_indexes(
            [
                IndexModel([("next_run_ms", ASCENDING)]),
                IndexModel([("firing.since_ms", ASCENDING)]),
                IndexModel([("list_key", DESCENDING)]),
                IndexModel([("user_id", ASCENDING), ("list_key", DESCENDING)]),
                IndexModel([("team_id", ASCENDING), ("list_key", DESCENDING)]),
            ]
        )

    async def insert(self, doc: Doc) -> None:
        await self.collection.insert_one(doc)

    async def get(self, schedule_id: str) -> Doc | None:
        return await self.collection.find_one({"_id": schedule_id})

    async def delete(self, schedule_id: str) -> bool:
        return (await self.collection.delete_one({"_id": schedule_id})).deleted_count == 1

    async def pause(self, schedule_id: str) -> Doc | None:
        return await self.collection.find_one_and_update(
            {"_id": schedule_id},
            {"$set": {"paused": True, "updated_ms": self.clock()}},
            return_document=ReturnDocument.AFTER,
        )

    async def resume(self, schedule_id: str, next_run_ms: int | None) -> Doc | None:
        """Resume a paused schedule from ``next_run_ms`` (a resumed one is left alone)."""
        await self.collection.update_one(
            {"_id": schedule_id, "paused": True},
            {"$set": {"paused": False, "next_run_ms": next_run_ms, "updated_ms": self.clock()}},
        )
        return await self.get(schedule_id)

    # ---- firing --------------------------------------------------------------------

    async def due(self, now_ms: int, limit: int) -> list[Doc]:
        query = {"next_run_ms": {"$lte": now_ms}, "paused": False}
        return await self.collection.find(query).sort("next_run_ms", 1).limit(limit).to_list(None)

    async def next_due_ms(self) -> int | None:
        doc = await self.collection.find_one(
            {"next_run_ms": {"$gte": 0}, "paused": False},
            {"next_run_ms": 1},
            sort=[("next_run_ms", 1)],
        )
        return None if doc is None else int(doc["next_run_ms"])

    async def advance(
        self,
        schedule_id: str,
        seen_next_ms: int,
        next_run_ms: int | None,
        run: tuple[int, str] | None,
    ) -> bool:
        """Move past the due time read (``seen_next_ms``), recording the run decided on
        (due ms, task id) if any; False when another replica (or a pause) came first, or
        a run decided before is not confirmed created yet (it is not overwritten: the
        sweep creates it first, ``stale_firings``)."""
        now = self.clock()
        fields: Doc = {"next_run_ms": next_run_ms, "updated_ms": now}
        if run is not None:
            due_ms, task_id = run
            fields.update(
                last_run_ms=due_ms,
                last_task_id=task_id,
                firing={"due_ms": due_ms, "task_id": task_id, "since_ms": now},
            )
        result = await self.collection.update_one(
            {
                "_id": schedule_id,
                "next_run_ms": seen_next_ms,
                "paused": False,
                "firing": {"$exists": False},
            },
            {"$set": fields},
        )
        return result.matched_count == 1

    async def settle_firing(self, schedule_id: str, due_ms: int) -> None:
        """The run decided for ``due_ms`` is created."""
        await self.collection.update_one(
            {"_id": schedule_id, "firing.due_ms": due_ms}, {"$unset": {"firing": ""}}
        )

    async def stale_firings(self, older_than_ms: int, limit: int) -> list[Doc]:
        """Runs decided but not confirmed created by a replica that may have died."""
        query = {"firing.since_ms": {"$lte": older_than_ms}}
        return await self.collection.find(query).limit(limit).to_list(None)
