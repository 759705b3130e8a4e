"""Coalescing concurrent calls into one batched call.

Why hand-written: the executor needs each caller's own answer back from one store round
trip shared by every concurrent attempt (claims, outcomes); asyncio has no primitive for
that, and a batching library would add a dependency for forty lines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` returns ``flush([...items])[i]`` for its item. A flush takes
    whatever arrived while the previous one ran (no timer: an idle caller waits for
    nothing), up to ``max_batch`` items."""

    def __init__(
        self, flush: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 256
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                results = await self._flush([item for item, _ in batch])
            except BaseException as exc:  # every caller gets the failure, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._running is not None:
            with contextlib.suppress(BaseException):
                await self._running
