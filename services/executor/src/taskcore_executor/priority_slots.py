"""Execution slots handed out by task priority.

The broker's priority queues order the messages it has not delivered yet; this keeps the
same order among the messages an executor has already prefetched and holds waiting for a
slot, so a high-priority task never queues locally behind a low-priority backlog.
Equal priorities are served first come, first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SlotsClosed(Exception):
    """The executor is shutting down: no more slots are handed out."""


class PrioritySlots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()
        self._closed = False

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    @property
    def waiting(self) -> int:
        return sum(1 for *_, fut in self._waiters if not fut.done())

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, priority: int) -> None:
        if self._closed:
            raise SlotsClosed
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._arrival), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # granted just as the waiter was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free += 1

    def close(self) -> None:
        """Refuse new acquisitions and fail every waiter with ``SlotsClosed``."""
        self._closed = True
        while self._waiters:
            *_, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_exception(SlotsClosed())
