"""Fair share between users inside a tier: no user's long tasks can take every slot.

A user may hold at most ``share`` of a tier's slots (at least one) in one executor.
Their further messages wait for one of their own tasks to end, unacked in the prefetch
buffer: for short tasks that is a brief wait, and a single user still runs at full
speed within its share. When a capped user's tasks have run longer than ``long_s``, its
waiting messages are handed back through a delay queue instead, so the broker delivers
the messages queued behind them and other users reach the slots the share keeps free.

Why this shape: RabbitMQ delivers one queue in order, so an executor can only be fair
among what it has been delivered; the hand-back is what lets other users' messages past
a long backlog, and it only happens while a user's tasks are long (their rate is low, so
the hand-backs are too). The share is per executor process, which is where slots are.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict


class FairShare:
    def __init__(self, capacity: int, *, share: float, long_s: float) -> None:
        self.cap = max(1, math.floor(capacity * share)) if share < 1 else capacity
        self.long_s = long_s
        self._started: dict[str, list[float]] = defaultdict(list)
        self._changed = asyncio.Event()

    def holding(self, user: str) -> int:
        return len(self._started.get(user, ()))

    async def admit(self, user: str) -> float | None:
        """Wait until ``user`` is within its share; the task's start, to hand to
        ``release``, or None if it should hand its message back instead (at its share
        with tasks running longer than ``long_s``)."""
        while self.holding(user) >= self.cap:
            if time.monotonic() - min(self._started[user]) > self.long_s:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.05, self.long_s / 4))
        started = time.monotonic()
        self._started[user].append(started)
        return started

    def release(self, user: str, started: float) -> None:
        """The task admitted at ``started`` ended (its own start goes, not the oldest: a
        short task ending must not make a long one look new)."""
        running = self._started.get(user)
        if running and started in running:
            running.remove(started)
            if not running:
                del self._started[user]
        self._changed.set()
