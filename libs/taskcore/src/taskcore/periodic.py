"""A background pass run again and again until stopped: the sweeps' one loop.

Every sweep (due dispatches, schedules, retention, the aggregator's watchdog) has the
same life: run a pass, sleep for as long as the pass says (until the next due time, or
a breath when more work is waiting), survive a failed pass, and stop promptly, cutting a
sleep short. Hand-written because it is a dozen lines over ``asyncio``, and no scheduler
library lets the pass itself choose the next wake-up and be stopped mid-sleep without
owning the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``one_pass`` until stopped; sleeps what it returns, ``interval_s`` after a failure."""

    def __init__(self, name: str, interval_s: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return after the pass in hand."""
        self._stop.set()

    async def run(self, one_pass: Callable[[], Awaitable[float]]) -> None:
        while not self._stop.is_set():
            wait = self.interval_s
            try:
                wait = await one_pass()
            except Exception:
                log.exception("%s failed; it will try again.", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)


def seconds_until(next_ms: int | None, now_ms: int, cap_s: float) -> float:
    """How long to sleep until ``next_ms``: never negative, never past ``cap_s``."""
    if next_ms is None:
        return cap_s
    return min(cap_s, max(0.0, (next_ms - now_ms) / 1000))
