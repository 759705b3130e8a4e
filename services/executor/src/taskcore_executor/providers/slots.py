"""Concurrency slots in MongoDB: one document per unit of a provider's concurrency.

A slot is free when its ``lease_until`` (Unix seconds) has passed. Claiming is one
conditional ``find_one_and_update``; the holder renews the lease while its call runs and
frees the slot on exit; a crashed holder's slot frees itself when the lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError
from taskcore.adapters.mongo import count_matching

log = logging.getLogger(__name__)

Doc = dict[str, Any]
DUPLICATE_KEY = 11000
# Times are Unix seconds: the nx-27017 stand-in turns a datetime written by ``$set`` into
# a string that no date comparison matches any more. 0.0 is "ended long ago".
EPOCH = 0.0


async def insert_ignoring_duplicates(coll: AsyncCollection[Doc], docs: list[Doc]) -> None:
    """Insert what is missing; documents that exist already are left as they are."""
    try:
        await coll.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise


class SlotPool:
    def __init__(
        self, coll: AsyncCollection[Doc], *, lease_s: float, clock: Callable[[], float]
    ) -> None:
        self._coll = coll
        self.lease_s = lease_s
        self._clock = clock

    async def create(self, provider: str, count: int) -> None:
        await insert_ignoring_duplicates(
            self._coll,
            [
                {
                    "_id": f"slot:{provider}:{i}",
                    "kind": "slot",
                    "provider": provider,
                    "index": i,
                    "holder": None,
                    "lease_until": EPOCH,
                }
                for i in range(count)
            ],
        )

    async def claim(self, provider: str, holder: str, below: int) -> str | None:
        """Take the lowest free slot whose index is below ``below``; its id, or None."""
        now = self._clock()
        doc = await self._coll.find_one_and_update(
            {
                "kind": "slot",
                "provider": provider,
                "index": {"$lt": below},
                "lease_until": {"$lt": now},
            },
            {"$set": {"holder": holder, "lease_until": now + self.lease_s}},
            sort=[("index", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else str(doc["_id"])

    async def renew(self, slot_id: str, holder: str) -> bool:
        """Extend the lease; False if the slot is no longer ours."""
        result = await self._coll.update_one(
            {"_id": slot_id, "holder": holder},
            {"$set": {"lease_until": self._clock() + self.lease_s}},
        )
        return result.matched_count == 1

    async def release(self, slot_id: str, holder: str) -> None:
        try:
            await self._coll.update_one(
                {"_id": slot_id, "holder": holder},
                {"$set": {"holder": None, "lease_until": EPOCH}},
            )
        except PyMongoError:
            log.warning(
                "Could not free slot %s; it frees itself when its lease expires.",
                slot_id,
                exc_info=True,
            )

    async def held(self, provider: str) -> int:
        live = {"kind": "slot", "provider": provider, "lease_until": {"$gt": self._clock()}}
        return await count_matching(self._coll, live)
