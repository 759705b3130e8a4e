"""Provider health: which providers may be called now, shared by every executor process.

- A provider whose ``api_key_env`` names an unset or empty variable is never called.
- One that answers 401 or 403 is *benched*: ``benched_until`` on its state document
  (``provider:<name>`` in ``provider_limits``, beside the limiter's fields) moves to now +
  ``bench_seconds``, so every executor skips it until then. After the bench the next call
  tries it again (a fixed key needs no restart; a still-bad one is benched again).
- Every ``refresh_s`` each executor reads the providers' states (one query), keeps them
  for its routing decisions, sets the provider gauges, and writes each provider's
  ``status`` as it sees it: what ``GET /v1/providers`` shows operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from taskcore.metrics import PROVIDER_BENCHED, PROVIDER_CONCURRENCY_LIMIT, PROVIDER_READY

from taskcore_executor.providers.config import ProviderConfig
from taskcore_executor.providers.limits import MongoLimiter

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclass(frozen=True)
class ProviderState:
    """One provider as this process last read it."""

    benched_until: float = 0.0
    bench_reason: str | None = None
    cooldown_until: float = 0.0
    concurrency_limit: int | None = None  # the limit after 429 back-off; None: unlimited
    in_use: int = 0


def _iso(seconds: float) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds > 0 else None


class ProviderHealth:
    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        tiers: Mapping[str, Sequence[str]],
        env: Mapping[str, str],
        *,
        limiter: MongoLimiter | None = None,
        bench_s: float = 300.0,
        refresh_s: float = 2.0,
        node: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Without a ``limiter`` (tools and tests without a store) everything stays in this
        process. With one, the state documents are the limiter's (it creates them)."""
        self.configs = dict(configs)
        self.tiers = {tier: list(names) for tier, names in tiers.items()}
        self.missing_key = {n for n, c in self.configs.items() if c.key_missing(env)}
        self.bench_s = bench_s
        self.refresh_s = refresh_s
        self._limiter = limiter
        self._states_coll = limiter.collection if limiter is not None else None
        self._node = node
        self._clock = clock
        self._states: dict[str, ProviderState] = {n: ProviderState() for n in self.configs}
        self._refreshed_at = float("-inf")
        self._ensured = False
        self._loop: asyncio.Task[None] | None = None

    # ---- deciding --------------------------------------------------------------------

    async def callable(self, chain: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The providers of ``chain`` that may be called now, in order, and why each
        other one may not."""
        if self._clock() - self._refreshed_at > self.refresh_s:
            with contextlib.suppress(Exception):  # a store hiccup: decide on what we know
                await self.refresh()
        now = self._clock()
        ready, skipped = [], {}
        for name in chain:
            state = self._states.get(name, ProviderState())
            if name in self.missing_key:
                skipped[name] = f"no API key ({self.configs[name].api_key_env} is not set)"
            elif state.benched_until > now:
                skipped[name] = (
                    f"benched until {_iso(state.benched_until)} ({state.bench_reason or '?'})"
                )
            else:
                ready.append(name)
        return ready, skipped

    async def bench(self, name: str, reason: str) -> None:
        """The provider refused our key: skip it everywhere for ``bench_s``."""
        until = self._clock() + self.bench_s
        current = self._states.get(name, ProviderState())
        self._states[name] = ProviderState(
            until, reason[:300], current.cooldown_until, current.concurrency_limit, current.in_use
        )
        PROVIDER_BENCHED.labels(name).set(1)
        PROVIDER_READY.labels(name).set(0)
        log.warning("Provider %s is benched for %gs: %s", name, self.bench_s, reason)
        if self._limiter is not None and self._states_coll is not None:
            try:
                await self._limiter.ensure(name)
                await self._states_coll.update_one(
                    {"_id": f"provider:{name}"},
                    {"$max": {"benched_until": until}, "$set": {"bench_reason": reason[:300]}},
                )
            except PyMongoError:  # benched here at least; the others find out with a 401
                log.warning("Could not share the bench of %s.", name, exc_info=True)

    # ---- sharing ---------------------------------------------------------------------

    def start(self) -> None:
        """Refresh in the background (idempotent; ``stop`` ends it)."""
        if self._loop is None and self._states_coll is not None:
            self._loop = asyncio.get_running_loop().create_task(self._run(), name="provider-health")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh(report=True)
            except Exception:
                log.warning("Reading the providers' states failed; trying again.", exc_info=True)
            await asyncio.sleep(self.refresh_s)

    async def refresh(self, *, report: bool = False) -> None:
        """Read every provider's shared state; with ``report`` also write its status."""
        self._refreshed_at = self._clock()
        if self._states_coll is None:
            self._set_gauges()
            return
        if not self._ensured and self._limiter is not None:
            for name in self.configs:  # the limiter creates the documents: it owns them
                await self._limiter.ensure(name)
            self._ensured = True
        docs = {
            d["provider"]: d
            async for d in self._states_coll.find({"kind": "provider"})
            if d.get("provider") in self.configs
        }
        in_use = await self._slots_held()
        for name in self.configs:
            self._states[name] = self._state_of(name, docs.get(name) or {}, in_use.get(name, 0))
        self._set_gauges()
        if report:
            for name in self.configs:
                await self._states_coll.update_one(
                    {"_id": f"provider:{name}"}, {"$set": {"status": self.status(name)}}
                )

    async def _slots_held(self) -> dict[str, int]:
        assert self._states_coll is not None
        held: dict[str, int] = {}
        query = {"kind": "slot", "lease_until": {"$gt": self._clock()}}
        async for slot in self._states_coll.find(query, {"provider": 1}):
            held[slot["provider"]] = held.get(slot["provider"], 0) + 1
        return held

    def _state_of(self, name: str, doc: Doc, in_use: int) -> ProviderState:
        limited = bool(self.configs[name].max_concurrency)
        return ProviderState(
            benched_until=float(doc.get("benched_until") or 0.0),
            bench_reason=doc.get("bench_reason"),
            cooldown_until=float(doc.get("cooldown_until") or 0.0),
            concurrency_limit=int(doc.get("effective_concurrency") or 0) if limited else None,
            in_use=in_use,
        )

    def condition(self, name: str) -> str:
        """``ready``, ``no_key``, ``benched`` or ``cooling_down`` (after a 429)."""
        state, now = self._states.get(name, ProviderState()), self._clock()
        if name in self.missing_key:
            return "no_key"
        if state.benched_until > now:
            return "benched"
        if state.cooldown_until > now:
            return "cooling_down"
        return "ready"

    def status(self, name: str) -> Doc:
        """The provider as operators see it (``GET /v1/providers``)."""
        config, state = self.configs[name], self._states.get(name, ProviderState())
        return {
            "name": name,
            "kind": config.kind,
            "model": config.model,
            "tiers": sorted(t for t, names in self.tiers.items() if name in names),
            "state": self.condition(name),
            "key_configured": name not in self.missing_key,
            "benched_until": _iso(state.benched_until),
            "bench_reason": state.bench_reason if state.benched_until > self._clock() else None,
            "cooldown_until": _iso(state.cooldown_until),
            "max_concurrency": config.max_concurrency,
            "concurrency_limit": state.concurrency_limit,
            "concurrency_in_use": state.in_use,
            "rpm": config.rpm,
            "tpm": config.tpm,
            "reported_by": self._node,
            "reported_at": datetime.now(UTC).isoformat(),
        }

    def _set_gauges(self) -> None:
        for name in self.configs:
            condition = self.condition(name)
            PROVIDER_READY.labels(name).set(1 if condition == "ready" else 0)
            PROVIDER_BENCHED.labels(name).set(1 if condition == "benched" else 0)
            limit = self._states[name].concurrency_limit
            if limit is not None:
                PROVIDER_CONCURRENCY_LIMIT.labels(name).set(limit)
