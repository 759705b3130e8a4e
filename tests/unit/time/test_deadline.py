"""An attempt past its deadline: stopped at a checkpoint, else abandoned (a thread too)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel
from taskcore import metrics
from taskcore.messages.envelope import TaskMessage
from taskcore.plugin import TaskContext, TaskTimeout, TaskType
from taskcore.testing import wait_for_async
from taskcore_executor.context import ExecutionContext, RunningTask
from taskcore_executor.deadline import within_deadline
from taskcore_executor.outcomes import Sequencer
from taskcore_executor.runner import run_task


class Empty(BaseModel):
    pass


def attempt() -> tuple[RunningTask, ExecutionContext]:
    msg = TaskMessage(task_id="t", task_type="test.time", user_id="u")
    running = RunningTask(msg, 1, Sequencer("t", 2, 1000), "t")
    ctx = ExecutionContext(
        running,
        store=None,  # type: ignore[arg-type]  # never reached by these tasks
        publisher=None,  # type: ignore[arg-type]
        emitter=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        guard=None,  # type: ignore[arg-type]
        node="n",
        lease_s=30,
    )
    return running, ctx


async def test_a_task_that_checks_in_stops_at_its_deadline_with_task_timeout() -> None:
    running, ctx = attempt()

    async def polite() -> None:
        while True:
            ctx.check_cancelled()
            await asyncio.sleep(0.01)

    began = time.monotonic()
    with pytest.raises(TaskTimeout):
        await within_deadline(polite(), running, 0.2, grace_s=5)
    assert 0.2 <= time.monotonic() - began < 1.0  # stopped at the checkpoint, no grace


async def test_a_task_that_never_checks_in_is_abandoned_after_the_grace() -> None:
    running, _ = attempt()
    began = time.monotonic()
    with pytest.raises(TaskTimeout, match="abandoned"):
        await within_deadline(asyncio.sleep(60), running, 0.1, grace_s=0.2)
    assert time.monotonic() - began < 1.0


async def test_a_result_within_the_limit_is_the_result() -> None:
    running, _ = attempt()

    async def quick() -> int:
        await asyncio.sleep(0.01)
        return 7

    assert await within_deadline(quick(), running, 5, grace_s=1) == 7
    assert await within_deadline(quick(), running, None, grace_s=1) == 7
    assert not running.timed_out


class Stubborn(TaskType[Empty, Empty]):
    """CPU-bound and deaf to its cancel flag until told to stop by the test."""

    name = "test.stubborn"
    Params = Empty
    Result = Empty
    cpu_bound = True
    release = threading.Event()

    async def execute(self, params: Empty, ctx: TaskContext) -> Empty:
        self.release.wait(10)
        return Empty()


async def test_an_abandoned_thread_frees_the_attempt_and_is_counted_until_it_returns() -> None:
    running, ctx = attempt()
    task_type: Any = Stubborn()
    abandoned = gauge()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        work = run_task(task_type, Empty(), ctx, pool)
        with pytest.raises(TaskTimeout):
            await within_deadline(work, running, 0.1, grace_s=0.1)
        await wait_for_async(counted(abandoned + 1), timeout=5, message="counted")
    finally:
        Stubborn.release.set()  # the thread returns at last
        pool.shutdown(wait=True)
    await wait_for_async(counted(abandoned), timeout=5, message="uncounted")


def gauge() -> float:
    return float(metrics.ABANDONED_THREADS._value.get())


def counted(value: float) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return gauge() == value

    return probe
