"""Fixed-window request and token counters in MongoDB, one document per provider window.

Taking a permit is ``find_one_and_update({_id, count < limit, tokens <= limit - n},
{$inc})``; the first taker of a window inserts its document (a duplicate-key error means
another process just did, so it tries the update once more). Old windows expire through
the TTL index on ``expires_at``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Doc = dict[str, Any]

# A window is kept this long after it ends: long enough to read what the last minute
# counted (an operator, a test), short enough that each provider keeps only a few.
KEPT_AFTER_END_S = 60.0


def per_window(per_minute: int, window_s: float) -> int:
    """A per-minute limit scaled to a window of ``window_s`` seconds (at least 1)."""
    return max(1, math.floor(per_minute * window_s / 60.0))


def window_of(provider: str, now: float, window_s: float) -> tuple[str, float]:
    """The id of the window ``now`` falls in, and when that window ends."""
    number = math.floor(now / window_s)
    return f"rate:{provider}:{number}", (number + 1) * window_s


class RateWindows:
    def __init__(self, coll: AsyncCollection[Doc], *, window_s: float) -> None:
        self._coll = coll
        self.window_s = window_s

    async def charge(
        self,
        window_id: str,
        window_end: float,
        *,
        rpm: int | None,
        tpm: int | None,
        tokens: int,
    ) -> bool:
        """Count one request of ``tokens`` in the window if it fits; whether it did."""
        condition: Doc = {"_id": window_id}
        if rpm is not None:
            condition["count"] = {"$lt": per_window(rpm, self.window_s)}
        if tpm is not None:
            condition["tokens"] = {"$lte": per_window(tpm, self.window_s) - tokens}
        update = {"$inc": {"count": 1, "tokens": tokens}}
        if await self._coll.find_one_and_update(condition, update) is not None:
            return True
        try:
            await self._coll.insert_one(
                {
                    "_id": window_id,
                    "kind": "rate",
                    "count": 1,
                    "tokens": tokens,
                    # Inserted, never $set, so the stand-in keeps it a datetime for the TTL.
                    "expires_at": datetime.fromtimestamp(window_end + KEPT_AFTER_END_S, UTC),
                }
            )
            return True
        except DuplicateKeyError:
            return await self._coll.find_one_and_update(condition, update) is not None

    async def adjust_tokens(self, window_id: str, delta: int) -> None:
        if delta:
            await self._coll.update_one({"_id": window_id}, {"$inc": {"tokens": delta}})
