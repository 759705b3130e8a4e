"""Per-tier submission quotas, counted atomically in the store.

Each user has one counter document per window (``quotas`` collection, ``_id``
``<window>:<index>:<user_id>``). A submission of ``k`` tasks takes them with one
conditional ``$inc`` (``n <= limit - k``), so concurrent submissions, on any number of
API processes, can never push a counter past its limit. A window's document is inserted
on first use; a duplicate-key error there only means another request inserted it first.
When a later window refuses, the earlier ones are given back, so a refused submission
costs nothing. Window documents expire by a TTL index once their window is over.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from taskcore.adapters.mongo import Store, now_ms
from taskcore.settings import Settings

MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Window:
    name: str  # "minute" or "day"
    size_ms: int
    limit: int


@dataclass(frozen=True)
class QuotaPolicy:
    """Limits per tier; a tier with no windows is unlimited."""

    windows: dict[str, tuple[Window, ...]]

    @classmethod
    def unlimited(cls) -> QuotaPolicy:
        return cls({})

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaPolicy:
        def tier(per_minute: int | None, per_day: int | None) -> tuple[Window, ...]:
            windows = [("minute", MINUTE_MS, per_minute), ("day", DAY_MS, per_day)]
            return tuple(Window(n, size, limit) for n, size, limit in windows if limit is not None)

        return cls(
            {
                "free": tier(settings.quota_free_per_minute, settings.quota_free_per_day),
                "paid": tier(settings.quota_paid_per_minute, settings.quota_paid_per_day),
            }
        )

    def for_tier(self, tier: str) -> tuple[Window, ...]:
        return self.windows.get(tier, ())


class QuotaExceeded(Exception):
    def __init__(self, window: Window, retry_after_s: int, requested: int) -> None:
        super().__init__(f"over the {window.name} quota of {window.limit}")
        self.window = window
        self.retry_after_s = retry_after_s
        self.requested = requested


@dataclass(frozen=True)
class Grant:
    """Counters taken for one submission, so they can be given back."""

    keys: tuple[str, ...]
    count: int


class Quotas:
    def __init__(self, store: Store, policy: QuotaPolicy) -> None:
        self._store = store
        self.policy = policy

    async def take(self, user_id: str, tier: str, count: int) -> Grant:
        """Count ``count`` submissions against every window of the tier, or none of them
        and raise ``QuotaExceeded``."""
        taken: list[str] = []
        if count <= 0:
            return Grant((), 0)
        for window in self.policy.for_tier(tier):
            now = now_ms()
            index = now // window.size_ms
            key = f"{window.name}:{index}:{user_id}"
            if not await self._take_one(key, window, index, count):
                await self.give_back(Grant(tuple(taken), count))
                retry_after = math.ceil(((index + 1) * window.size_ms - now) / 1000)
                raise QuotaExceeded(window, max(1, retry_after), count)
            taken.append(key)
        return Grant(tuple(taken), count)

    async def give_back(self, grant: Grant) -> None:
        for key in grant.keys:
            await self._store.quotas.update_one({"_id": key}, {"$inc": {"n": -grant.count}})

    async def _take_one(self, key: str, window: Window, index: int, count: int) -> bool:
        if count > window.limit:
            return False
        if await self._increment(key, window.limit - count, count):
            return True
        ends = datetime.fromtimestamp((index + 1) * window.size_ms / 1000, UTC)
        # A duplicate means it exists: the refusal above was the limit, or a concurrent
        # request inserted it first.
        with contextlib.suppress(DuplicateKeyError):
            await self._store.quotas.insert_one(
                {"_id": key, "n": 0, "expires_at": ends + timedelta(minutes=1)}
            )
        return await self._increment(key, window.limit - count, count)

    async def _increment(self, key: str, at_most: int, count: int) -> bool:
        doc = await self._store.quotas.find_one_and_update(
            {"_id": key, "n": {"$lte": at_most}},
            {"$inc": {"n": count}},
            {"_id": 1},
            return_document=ReturnDocument.AFTER,
        )
        return doc is not None


async def ensure_quota_indexes(store: Store) -> None:
    await store.quotas.create_index("expires_at", expireAfterSeconds=0)
