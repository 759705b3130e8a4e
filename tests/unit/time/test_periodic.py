"""The sweeps' loop: a failed pass does not end it, the pass picks the sleep, stop is prompt."""

from __future__ import annotations

import asyncio
import logging

import pytest
from taskcore.periodic import Periodic, seconds_until


async def test_a_failed_pass_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Periodic("The test sweep", interval_s=0.0)
    passes = 0

    async def one_pass() -> float:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("boom")
        if passes == 3:
            loop.stop()
        return 0.0

    with caplog.at_level(logging.ERROR, logger="taskcore.periodic"):
        await asyncio.wait_for(loop.run(one_pass), 5)
    assert passes == 3
    assert [r.getMessage() for r in caplog.records] == ["The test sweep failed; it will try again."]


async def test_stop_cuts_a_long_sleep_short() -> None:
    loop = Periodic("The test sweep", interval_s=3600.0)
    slept = asyncio.Event()

    async def one_pass() -> float:
        slept.set()
        return 3600.0  # the pass asks for an hour

    running = asyncio.create_task(loop.run(one_pass))
    await asyncio.wait_for(slept.wait(), 5)
    loop.stop()
    await asyncio.wait_for(running, 5)  # would hang for an hour without the stop event


@pytest.mark.parametrize(
    ("next_ms", "now_ms", "cap_s", "expected"),
    [
        (None, 1_000, 0.5, 0.5),  # nothing due: one interval
        (1_200, 1_000, 0.5, 0.2),  # due before the cap
        (9_000, 1_000, 0.5, 0.5),  # due after the cap
        (900, 1_000, 0.5, 0.0),  # overdue: no negative sleep
    ],
)
def test_seconds_until(next_ms: int | None, now_ms: int, cap_s: float, expected: float) -> None:
    assert seconds_until(next_ms, now_ms, cap_s) == pytest.approx(expected)
