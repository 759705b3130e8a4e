"""Provider limits that hold across every executor process at once, kept in MongoDB.

All state lives in the ``provider_limits`` collection and changes only by single-document
atomic updates (no transactions), so any number of processes share one budget:

- ``provider:<name>``: ``effective_concurrency`` (adaptive, at most ``max_concurrency``),
  ``cooldown_until`` (set after a 429; acquirers wait it out or fall back), ``changed_at``.
- ``slot:<name>:<i>``: concurrency slots with leases (see ``slots``).
- ``rate:<name>:<window>``: request and token counters per window (see
  ``rate_windows``). Windows are ``rate_window_s`` long (60 by default) and the
  per-minute limits are scaled to that length.

A permit is taken in this order: wait out any cooldown, claim a slot, charge the rate
window (holding the slot, so the request goes out in the window it was counted in).

On a 429 the provider's ``cooldown_until`` moves to now + Retry-After and its effective
concurrency halves (at most once per ``decrease_interval_s``); a success after a quiet
``recover_interval_s`` adds one slot back (AIMD). Slots above a lowered limit are not
taken back from their holders; they are simply not handed out until it recovers.

Windows and leases use each process's wall clock (Unix seconds), so executors on
different machines need synchronised clocks (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from taskcore.adapters.mongo import Store
from taskcore.metrics import PROVIDER_IN_USE, PROVIDER_RATE_LIMIT_WAIT_SECONDS
from taskcore.plugin import NonRetryableError, RateLimitedError

from taskcore_executor.providers.rate_windows import RateWindows, per_window, window_of
from taskcore_executor.providers.slots import EPOCH, SlotPool, insert_ignoring_duplicates

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclass(frozen=True)
class ProviderLimits:
    """None means "no limit" for that dimension."""

    max_concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.max_concurrency is None and self.rpm is None and self.tpm is None


@dataclass(frozen=True)
class Permit:
    """What ``acquire`` granted: the slot held (if concurrency is limited) and the rate
    window charged (if requests or tokens are limited)."""

    provider: str
    holder: str
    slot_id: str | None = None
    window_id: str | None = None
    tokens: int = 0


class ProviderSaturated(RateLimitedError):
    """No permit within the wait allowed: the provider is busy, cooling down after a 429,
    or out of its per-minute budget. The router falls back to the next provider."""


class Limiter(Protocol):
    """Shared limits on provider use."""

    def acquire(
        self, provider: str, *, tokens: int = 0, max_wait_s: float | None = None
    ) -> AbstractAsyncContextManager[Permit]:
        """Hold a permit for one call; wait at most ``max_wait_s``, then raise
        ``ProviderSaturated``."""
        ...

    async def settle(self, permit: Permit, actual_tokens: int) -> None:
        """Correct the token count charged at acquire with what the call really used."""

    async def report_rate_limited(self, provider: str, retry_after: float | None) -> None:
        """The provider answered 429: cool down and lower concurrency."""

    async def report_success(self, provider: str) -> None:
        """A call succeeded: concurrency may recover."""


class MongoLimiter:
    def __init__(
        self,
        store: Store,
        limits: Mapping[str, ProviderLimits],
        *,
        lease_s: float = 30.0,
        rate_window_s: float = 60.0,
        default_max_wait_s: float = 30.0,
        default_cooldown_s: float = 5.0,
        decrease_interval_s: float = 2.0,
        recover_interval_s: float = 10.0,
        poll_s: tuple[float, float] = (0.02, 0.25),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._coll = store.limits
        self._limits = dict(limits)
        self._slots = SlotPool(store.limits, lease_s=lease_s, clock=clock)
        self._windows = RateWindows(store.limits, window_s=rate_window_s)
        self._default_max_wait_s = default_max_wait_s
        self._default_cooldown_s = default_cooldown_s
        self._decrease_interval_s = decrease_interval_s
        self._recover_interval_s = recover_interval_s
        self._poll_s = poll_s
        self._clock = clock
        self._ready: set[str] = set()
        self._indexes_ready = False
        self._below_max: dict[str, bool] = {}

    @property
    def collection(self) -> AsyncCollection[Doc]:
        """Where the providers' shared state lives (``health`` adds its fields there)."""
        return self._coll

    # -- setup -----------------------------------------------------------------------

    async def ensure(self, provider: str) -> None:
        """Create the provider's state and slot documents (idempotent, any process)."""
        if provider in self._ready:
            return
        if not self._indexes_ready:
            await self._coll.create_indexes(
                [
                    IndexModel(
                        [("kind", ASCENDING), ("provider", ASCENDING), ("index", ASCENDING)]
                    ),
                    IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),
                ]
            )
            self._indexes_ready = True
        limits = self._limits[provider]
        await self._ensure_state(provider, limits.max_concurrency or 0)
        if limits.max_concurrency:
            await self._slots.create(provider, limits.max_concurrency)
        self._ready.add(provider)

    async def _ensure_state(self, provider: str, ceiling: int) -> None:
        key = f"provider:{provider}"
        await insert_ignoring_duplicates(
            self._coll,
            [
                {
                    "_id": key,
                    "kind": "provider",
                    "provider": provider,
                    "max_concurrency": ceiling,
                    "effective_concurrency": ceiling,
                    "cooldown_until": EPOCH,
                    "changed_at": EPOCH,
                }
            ],
        )
        # A configuration change between deployments: the new ceiling wins.
        await self._coll.update_one({"_id": key}, {"$set": {"max_concurrency": ceiling}})
        await self._coll.update_one(
            {"_id": key, "effective_concurrency": {"$gt": ceiling}},
            {"$set": {"effective_concurrency": ceiling}},
        )

    # -- acquiring -------------------------------------------------------------------

    @asynccontextmanager
    async def acquire(
        self, provider: str, *, tokens: int = 0, max_wait_s: float | None = None
    ) -> AsyncIterator[Permit]:
        limits = self._limits.get(provider)
        holder = uuid.uuid4().hex
        if limits is None or limits.unlimited:
            yield Permit(provider=provider, holder=holder, tokens=tokens)
            return
        self._check_fits(provider, limits, tokens)
        await self.ensure(provider)
        permit = await self._wait_for_permit(provider, limits, holder, tokens, max_wait_s)
        PROVIDER_IN_USE.labels(provider).inc()
        renewal = asyncio.create_task(self._renew(permit)) if permit.slot_id else None
        try:
            yield permit
        finally:
            PROVIDER_IN_USE.labels(provider).dec()
            if renewal is not None:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            if permit.slot_id is not None:
                await self._slots.release(permit.slot_id, holder)

    def _check_fits(self, provider: str, limits: ProviderLimits, tokens: int) -> None:
        window_s = self._windows.window_s
        if limits.tpm is not None and tokens > per_window(limits.tpm, window_s):
            raise NonRetryableError(
                f"the request needs about {tokens} tokens, more than {provider}'s budget of "
                f"{per_window(limits.tpm, window_s)} per {window_s:g}s window"
            )

    async def _wait_for_permit(
        self,
        provider: str,
        limits: ProviderLimits,
        holder: str,
        tokens: int,
        max_wait_s: float | None,
    ) -> Permit:
        started = time.monotonic()
        deadline = started + (self._default_max_wait_s if max_wait_s is None else max_wait_s)
        try:
            slot_id = await self._claim_slot(provider, limits, holder, deadline)
            try:
                window_id = await self._take_rate(provider, limits, tokens, deadline)
            except BaseException:
                if slot_id is not None:
                    await self._slots.release(slot_id, holder)
                raise
        finally:
            PROVIDER_RATE_LIMIT_WAIT_SECONDS.labels(provider).inc(time.monotonic() - started)
        return Permit(provider, holder, slot_id=slot_id, window_id=window_id, tokens=tokens)

    async def _claim_slot(
        self, provider: str, limits: ProviderLimits, holder: str, deadline: float
    ) -> str | None:
        """Wait out a cooldown, then claim a slot (None when concurrency is unlimited)."""
        delay = self._poll_s[0]
        while True:
            state = await self._coll.find_one({"_id": f"provider:{provider}"}) or {}
            effective = int(state.get("effective_concurrency", 0))
            self._below_max[provider] = effective < int(state.get("max_concurrency", 0))
            cooldown = float(state.get("cooldown_until", EPOCH)) - self._clock()
            if cooldown > 0:
                await self._sleep_or_give_up(provider, cooldown, deadline, "cooling down")
                continue
            if not limits.max_concurrency:
                return None
            slot = await self._slots.claim(provider, holder, below=effective)
            if slot is not None:
                return slot
            pause = delay * random.uniform(0.5, 1.5)
            await self._sleep_or_give_up(provider, pause, deadline, "at its concurrency limit")
            delay = min(self._poll_s[1], delay * 1.5)

    async def _take_rate(
        self, provider: str, limits: ProviderLimits, tokens: int, deadline: float
    ) -> str | None:
        if limits.rpm is None and limits.tpm is None:
            return None
        while True:
            now = self._clock()
            window_id, window_end = window_of(provider, now, self._windows.window_s)
            if await self._windows.charge(
                window_id, window_end, rpm=limits.rpm, tpm=limits.tpm, tokens=tokens
            ):
                return window_id
            wait = window_end - now + random.uniform(0.0, 0.02)
            await self._sleep_or_give_up(provider, wait, deadline, "out of its rate budget")

    async def _sleep_or_give_up(
        self, provider: str, seconds: float, deadline: float, why: str
    ) -> None:
        if time.monotonic() + seconds > deadline:
            raise ProviderSaturated(
                f"{provider} is {why}; no permit within the wait allowed",
                retry_after=max(seconds, 0.1),
            )
        await asyncio.sleep(seconds)

    async def _renew(self, permit: Permit) -> None:
        assert permit.slot_id is not None
        while True:
            await asyncio.sleep(self._slots.lease_s / 3)
            if not await self._slots.renew(permit.slot_id, permit.holder):
                log.warning(
                    "Lost the %s slot %s: its lease expired before it could be renewed.",
                    permit.provider,
                    permit.slot_id,
                )
                return

    async def settle(self, permit: Permit, actual_tokens: int) -> None:
        limits = self._limits.get(permit.provider)
        if permit.window_id is not None and limits is not None and limits.tpm is not None:
            await self._windows.adjust_tokens(permit.window_id, actual_tokens - permit.tokens)

    # -- adapting --------------------------------------------------------------------

    async def report_rate_limited(self, provider: str, retry_after: float | None) -> None:
        if provider not in self._ready:
            return
        now = self._clock()
        until = now + (self._default_cooldown_s if retry_after is None else retry_after)
        key = f"provider:{provider}"
        await self._coll.update_one(
            {"_id": key, "cooldown_until": {"$lt": until}}, {"$set": {"cooldown_until": until}}
        )
        state = await self._coll.find_one({"_id": key})
        if state is None or state["effective_concurrency"] <= 1:
            return
        # Conditional on what we read, so concurrent 429s halve it once, not once each.
        await self._coll.update_one(
            {
                "_id": key,
                "effective_concurrency": state["effective_concurrency"],
                "changed_at": {"$lt": now - self._decrease_interval_s},
            },
            {
                "$set": {
                    "effective_concurrency": max(1, state["effective_concurrency"] // 2),
                    "changed_at": now,
                }
            },
        )
        self._below_max[provider] = True

    async def report_success(self, provider: str) -> None:
        limits = self._limits.get(provider)
        if not self._below_max.get(provider) or limits is None or not limits.max_concurrency:
            return
        now = self._clock()
        await self._coll.update_one(
            {
                "_id": f"provider:{provider}",
                "effective_concurrency": {"$lt": limits.max_concurrency},
                "changed_at": {"$lt": now - self._recover_interval_s},
            },
            {"$inc": {"effective_concurrency": 1}, "$set": {"changed_at": now}},
        )

    async def state(self, provider: str) -> Doc:
        """The provider's shared state plus the number of slots held now (for operators
        and tests)."""
        await self.ensure(provider)
        doc = await self._coll.find_one({"_id": f"provider:{provider}"}) or {}
        return {**doc, "slots_held": await self._slots.held(provider)}
