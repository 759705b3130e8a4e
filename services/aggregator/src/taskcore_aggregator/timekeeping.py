"""The aggregator's clock work: delayed dispatches, schedules and retention.

Why the aggregator runs them (and not the API or the executor): it is the system's
bookkeeper, off the request path (an API replica's latency is not spent on sweeps) and
off the work path (an executor's event loop is shared with the tasks it runs, and a busy
CPU-bound task would make a schedule late). Every sweep is safe in any number of
replicas: each due dispatch and each schedule's due time is taken by one conditional
write, and retention only removes what every replica would remove.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.due_dispatch import DueDispatcher
from taskcore.quotas import QuotaPolicy
from taskcore.retention import RetentionPolicy, RetentionSweeper
from taskcore.scheduling.firing import ScheduleFirer
from taskcore.settings import Settings


class Timekeeping:
    def __init__(self, settings: Settings, store: Store, publisher: Publisher) -> None:
        self.due = DueDispatcher(
            store.documents, publisher, interval_s=settings.due_sweep_interval_seconds
        )
        self.schedules = ScheduleFirer(
            store,
            publisher,
            interval_s=settings.schedule_sweep_interval_seconds,
            misfire_grace_s=settings.schedule_misfire_grace_seconds,
            quota_policy=QuotaPolicy.from_settings(settings),
        )
        self.retention = RetentionSweeper(
            store,
            RetentionPolicy.of_days(settings.retention_days, settings.retention_days_failed),
            interval_s=settings.retention_interval_seconds,
            batch=settings.retention_batch,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "due-dispatch": self.due.run_forever,
            "schedules": self.schedules.run_forever,
            "retention": self.retention.run_forever,
        }
        self._tasks = [asyncio.create_task(run(), name=name) for name, run in loops.items()]

    async def stop(self, grace_s: float = 10.0) -> None:
        """Ask every loop to stop after the step in hand; cancel what is still late."""
        for loop in (self.due, self.schedules, self.retention):
            loop.stop()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
