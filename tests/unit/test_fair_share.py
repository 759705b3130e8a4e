"""Fair share's bookkeeping (the behaviour on a real broker: tests/integration/executor)."""

from __future__ import annotations

import pytest
from taskcore_executor import fair_share
from taskcore_executor.fair_share import FairShare


async def test_a_short_task_ending_leaves_the_long_ones_start_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(fair_share.time, "monotonic", lambda: now[0])
    fair = FairShare(4, share=0.5, long_s=10.0)  # a user holds at most 2 slots

    long_one = await fair.admit("hog")  # t=100, runs on
    now[0] = 108.0
    short_one = await fair.admit("hog")  # t=108, ends at once
    assert long_one is not None
    assert short_one is not None
    fair.release("hog", short_one)
    blocker = await fair.admit("hog")  # back at its share
    assert blocker is not None

    now[0] = 111.0  # the long task has run 11 s, the blocker 3 s
    assert await fair.admit("hog") is None, "at its share with a long task: hand back"


async def test_release_frees_the_slot_it_names() -> None:
    fair = FairShare(2, share=0.5, long_s=10.0)
    started = await fair.admit("u")
    assert started is not None
    assert fair.holding("u") == 1

    fair.release("u", started)

    assert fair.holding("u") == 0
