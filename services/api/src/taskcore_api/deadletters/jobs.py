"""Bulk replay as a durable job that a crash cannot make lose or repeat work.

Creating a job snapshots the matching dead letters' ids, in order, into one job document;
nothing about the job lives only in memory. A runner claims the job with a lease, replays
the ids from ``position`` on at the job's rate, and after each one advances ``position``,
counts the outcome and renews its lease in ONE conditional update. A runner that dies
leaves the lease to expire and the job is resumed from ``position`` by whichever process
sweeps next; the one id that may have been replayed but not yet counted is replayed
again, which the single replay turns into a no-op (and reports as this job's replay, since
the record names the job that replayed it). So every id is replayed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError
from taskcore.adapters.mongo import Doc, now_ms

from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.filters import DeadLetterFilter
from taskcore_api.deadletters.repository import DeadLetterRepository
from taskcore_api.deadletters.results import DeadLetterNotFound, ReplayRefused

log = logging.getLogger(__name__)

_JOB_NAMESPACE = uuid.UUID("0d6b7f3e-6a51-4b55-9a0e-3f1f6f0c2d11")

RUNNING = "running"
DONE = "done"
OUTCOMES = ("replayed", "already_replayed", "in_progress", "refused", "missing")


def job_id_for(user_id: str, idempotency_key: str | None) -> str:
    """The same admin and key always name the same job, so a retried POST finds it."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_JOB_NAMESPACE, f"{user_id}\x00{idempotency_key}").hex


class ReplayJobs:
    def __init__(self, actions: DeadLetterActions, owner: str) -> None:
        self.actions = actions
        self.repo: DeadLetterRepository = actions.repo
        self.settings = actions.settings
        self.owner = owner

    async def create(
        self,
        job_id: str,
        selection: DeadLetterFilter,
        *,
        rate: float,
        limit: int,
        by: str,
        request_hash: str,
    ) -> tuple[Doc, bool]:
        """The job (new, or the one this id already names) and whether it was created."""
        ids = await self.repo.pending_ids(selection, limit)
        now = datetime.now(UTC)
        job: Doc = {
            "_id": job_id,
            "state": RUNNING if ids else DONE,
            "filter": selection.model_dump(mode="json"),
            "rate_per_second": rate,
            "ids": ids,
            "total": len(ids),
            "position": 0,
            "counts": dict.fromkeys(OUTCOMES, 0),
            "results": {},
            "requested_by": by,
            "body_hash": request_hash,
            "created_at": now,
            "created_at_ms": now_ms(),
            "finished_at_ms": None if ids else now_ms(),
            "owner": None,
            "lease_until_ms": 0,
        }
        try:
            await self.repo.jobs.insert_one(job)
        except DuplicateKeyError:
            existing = await self.get(job_id)
            assert existing is not None
            return existing, False
        return job, True

    async def get(self, job_id: str) -> Doc | None:
        return await self.repo.jobs.find_one({"_id": job_id})

    async def runnable(self, limit: int = 10) -> list[str]:
        found = self.repo.jobs.find(
            {"state": RUNNING, "lease_until_ms": {"$lt": now_ms()}}, {"_id": 1}
        )
        return [d["_id"] for d in await found.limit(limit).to_list(None)]

    async def run(self, job_id: str) -> bool:
        """Claim the job and replay its remaining ids; False if someone else holds it."""
        job = await self._claim(job_id)
        if job is None:
            return False
        pacer = Pacer(float(job["rate_per_second"]))
        ids: list[str] = job["ids"]
        for position in range(int(job["position"]), len(ids)):
            if pacer.delay() > self.settings.job_lease_seconds / 2:
                # A slow rate must not let the lease lapse while this runner only waits.
                await self._renew(job_id, pacer.delay())
            await pacer.wait()
            try:
                result = await self._replay_one(job, ids[position])
            except Exception:
                log.exception("Bulk replay %s stopped at %d; it will resume.", job_id, position)
                await self._release(job_id)
                return True
            if not await self._advance(job_id, position, result):
                log.warning(
                    "Bulk replay %s lost its lease at %d to another runner.", job_id, position
                )
                return True
        await self.repo.jobs.update_one(
            {"_id": job_id, "owner": self.owner},
            {"$set": {"state": DONE, "finished_at_ms": now_ms(), "lease_until_ms": 0}},
        )
        log.info("Bulk replay %s finished %d dead letters.", job_id, len(ids))
        return True

    async def _claim(self, job_id: str) -> Doc | None:
        now = now_ms()
        return await self.repo.jobs.find_one_and_update(
            {"_id": job_id, "state": RUNNING, "lease_until_ms": {"$lt": now}},
            {"$set": {"owner": self.owner, "lease_until_ms": now + self._lease_ms}},
            return_document=ReturnDocument.AFTER,
        )

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.job_lease_seconds * 1000)

    async def _replay_one(self, job: Doc, record_id: str) -> Doc:
        try:
            outcome = await self.actions.replay(
                record_id, by=job["requested_by"], job_id=job["_id"]
            )
        except ReplayRefused as refused:
            return {
                "id": record_id,
                "outcome": "refused",
                "code": refused.code,
                "message": refused.message,
            }
        except DeadLetterNotFound:
            return {"id": record_id, "outcome": "missing"}
        return {
            "id": record_id,
            "outcome": outcome.outcome,
            "task_id": outcome.record.get("task_id"),
        }

    async def _advance(self, job_id: str, position: int, result: Doc) -> bool:
        """Count one id done, move on and renew the lease, all in one conditional update."""
        updated = await self.repo.jobs.update_one(
            {"_id": job_id, "owner": self.owner, "position": position},
            {
                "$set": {
                    "position": position + 1,
                    f"results.{position}": result,
                    "lease_until_ms": now_ms() + self._lease_ms,
                },
                "$inc": {f"counts.{result['outcome']}": 1},
            },
        )
        return updated.matched_count == 1

    async def _renew(self, job_id: str, extra_s: float) -> None:
        await self.repo.jobs.update_one(
            {"_id": job_id, "owner": self.owner},
            {"$set": {"lease_until_ms": now_ms() + self._lease_ms + int(extra_s * 1000)}},
        )

    async def _release(self, job_id: str) -> None:
        await self.repo.jobs.update_one(
            {"_id": job_id, "owner": self.owner}, {"$set": {"lease_until_ms": 0, "owner": None}}
        )


class Pacer:
    """At most ``rate`` calls per second: the bulk replay's rate limit."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    def delay(self) -> float:
        """How long the next ``wait`` will wait."""
        return max(0.0, self._next - time.monotonic())

    async def wait(self) -> None:
        delay = self.delay()
        if delay > 0:
            await asyncio.sleep(delay)  # the rate limit itself, not synchronisation
        self._next = max(self._next, time.monotonic()) + self._interval


def job_results(job: Doc) -> list[Any]:
    results: dict[str, Any] = job.get("results") or {}
    return [results[k] for k in sorted(results, key=int)]
