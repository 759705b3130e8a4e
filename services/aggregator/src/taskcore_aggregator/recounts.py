"""Debounced parent recounts: a parent with 10k children costs a few recounts, not 10k.

Each fold batch marks the parents it touched (persistently, see ``parents``) and hands
them here. A parent is recounted at once if it has not been recounted lately; otherwise
it waits until ``min_interval_s`` after its last recount, or longer if recounting it is
slow (at most about a fifth of the time goes to any one parent's recounts). Marks that
arrive while it waits fold into that one recount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher

from taskcore_aggregator.parents import WorkflowAdvancer, mark_for_recount, refresh_parent

log = logging.getLogger(__name__)

COST_FACTOR = 4.0  # wait at least this many times the last recount's duration
RETRY_AFTER_S = 1.0


class ParentRefresher:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        *,
        min_interval_s: float,
        workflows: WorkflowAdvancer | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.workflows = workflows
        self.min_interval_s = min_interval_s
        self.recounts = 0  # how many recounts ran (for tests and logs)
        self._dirty: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def stop(self) -> None:
        """Ask the loop to return after the recount in hand (never cut one off)."""
        self._stopping = True
        self._wake.set()

    async def mark(self, parent_ids: Iterable[str]) -> None:
        ids = set(parent_ids)
        if not ids:
            return
        await mark_for_recount(self.store, ids)
        self._dirty |= ids
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def run_forever(self) -> None:
        while not self._stopping:
            due, wait_s = self._due(time.monotonic())
            for parent_id in due:
                if self._stopping:
                    break  # still marked in the store: the watchdog or a replica takes it
                await self._refresh(parent_id)
            if not due and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait_s)

    def _due(self, now: float) -> tuple[list[str], float | None]:
        due = [p for p in self._dirty if self._not_before.get(p, 0.0) <= now]
        self._dirty.difference_update(due)
        self._not_before = {p: t for p, t in self._not_before.items() if t > now}
        waits = [self._not_before[p] - now for p in self._dirty if p in self._not_before]
        return due, min(waits) if waits else None

    async def _refresh(self, parent_id: str) -> None:
        started = time.monotonic()
        try:
            await refresh_parent(self.store, self.publisher, parent_id, self.workflows)
        except Exception:
            log.exception("Recounting parent %s failed; it will be tried again.", parent_id)
            self._dirty.add(parent_id)
            self._not_before[parent_id] = time.monotonic() + RETRY_AFTER_S
            return
        self.recounts += 1
        cost = time.monotonic() - started
        self._not_before[parent_id] = started + max(self.min_interval_s, cost * COST_FACTOR)
