"""The ``dead_letters`` collection: idempotent parking, reading, and state moves.

A record's ``state`` moves only by single-document conditional updates, and a record in
motion (``replaying``, ``discarding``) carries a lease (``lease_until_ms``): whoever holds
the lease drives the move to its end, and a move whose driver died is taken over once
its lease has expired. Times that queries compare are epoch milliseconds (see
docs/design.md, "Times in the store").
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError
from taskcore.adapters.mongo import Doc, Store, count_matching, now_ms

from taskcore_api.deadletters.filters import DeadLetterFilter, StateFilter, after_cursor
from taskcore_api.deadletters.records import RecordState

JOBS_COLLECTION = "dead_letter_replay_jobs"


class DeadLetterRepository:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.records: AsyncCollection[Doc] = store.dead_letters
        self.jobs: AsyncCollection[Doc] = store.db[JOBS_COLLECTION]

    async def ensure_indexes(self) -> None:
        await self.records.create_indexes(
            [
                IndexModel([("dead_lettered_at_ms", DESCENDING)]),
                IndexModel([("state", ASCENDING), ("dead_lettered_at_ms", ASCENDING)]),
                IndexModel([("state", ASCENDING), ("lease_until_ms", ASCENDING)]),
                IndexModel([("task_id", ASCENDING), ("dispatch", ASCENDING)]),
            ]
        )
        await self.jobs.create_indexes(
            [IndexModel([("state", ASCENDING), ("lease_until_ms", ASCENDING)])]
        )

    async def park(self, record: Doc) -> bool:
        """Insert a new record; False when it was parked before (a redelivery)."""
        try:
            await self.records.insert_one(record)
        except DuplicateKeyError:
            return False
        return True

    async def get(self, record_id: str) -> Doc | None:
        return await self.records.find_one({"_id": record_id})

    async def page(
        self,
        selection: DeadLetterFilter,
        state: StateFilter,
        limit: int,
        cursor: tuple[int, str] | None,
    ) -> list[Doc]:
        query = selection.query(state)
        if cursor is not None:
            query = after_cursor(query, cursor)
        found = self.records.find(query).sort(
            [("dead_lettered_at_ms", DESCENDING), ("_id", DESCENDING)]
        )
        return await found.limit(limit).to_list(None)

    async def count(self, selection: DeadLetterFilter, state: StateFilter) -> int:
        return await count_matching(self.records, selection.query(state))

    async def pending_ids(self, selection: DeadLetterFilter, limit: int) -> list[str]:
        """Replayable records matching ``selection``, oldest first."""
        found = self.records.find(selection.query("pending"), {"_id": 1}).sort(
            [("dead_lettered_at_ms", ASCENDING), ("_id", ASCENDING)]
        )
        return [d["_id"] for d in await found.limit(limit).to_list(None)]

    async def move(
        self, record_id: str, condition: Doc, target: str, fields: Doc | None = None, **inc: int
    ) -> Doc | None:
        """Move a record to ``target`` if it matches ``condition``; the record after, or None."""
        update: dict[str, Any] = {"$set": {"state": target, **(fields or {})}}
        if inc:
            update["$inc"] = inc
        return await self.records.find_one_and_update(
            {"_id": record_id, **condition}, update, return_document=ReturnDocument.AFTER
        )

    async def take_over(
        self, record_id: str, state: str, lease_s: float, job_id: str | None
    ) -> Doc | None:
        """Take the lease of a move in progress whose driver went silent (or that this job
        itself started before a crash: the job's own lease makes it the only runner)."""
        now = now_ms()
        expired: Doc = {"lease_until_ms": {"$lt": now}}
        condition = {"$or": [expired, {"replay.job_id": job_id}]} if job_id else expired
        return await self.records.find_one_and_update(
            {"_id": record_id, "state": state, **condition},
            {"$set": {"lease_until_ms": now + int(lease_s * 1000)}},
            return_document=ReturnDocument.AFTER,
        )

    async def stale(self, limit: int = 100) -> list[Doc]:
        """Moves in progress whose driver went silent."""
        found = self.records.find(
            {
                "state": {"$in": [RecordState.REPLAYING, RecordState.DISCARDING]},
                "lease_until_ms": {"$lt": now_ms()},
            },
            {"_id": 1, "state": 1},
        )
        return await found.limit(limit).to_list(None)
