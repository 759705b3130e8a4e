"""Task types the executor's tests load through ``TASKCORE_PLUGINS``.

They run in-process in the integration tests, so ``STARTED`` (the order attempts began
in) is visible to the test that submitted them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.plugin import (
    RateLimitedError,
    RetryableError,
    SubtaskPolicy,
    SubtaskSpec,
    TaskContext,
    TaskType,
)
from taskcore.settings import Settings

STARTED: list[str] = []  # task ids, in the order their attempts began (in this process)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.0


class Record(TaskType[RecordParams, Empty]):
    """Notes when it started, then sleeps: for ordering tests (priority, tiers)."""

    name = "test.record"
    Params = RecordParams
    Result = Empty

    async def execute(self, params: RecordParams, ctx: TaskContext) -> Empty:
        import asyncio

        STARTED.append(ctx.task_id)
        await asyncio.sleep(params.seconds)  # the task's own work
        return Empty()


class RateLimitedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retry_after: float = 1.5
    times: int = 1


class RateLimited(TaskType[RateLimitedParams, Empty]):
    """Rate-limited on its first ``times`` attempts, then succeeds."""

    name = "test.rate_limited"
    Params = RateLimitedParams
    Result = Empty
    retry = RetryPolicy(max_attempts=1)  # a rate limit must not use up this one attempt

    async def execute(self, params: RateLimitedParams, ctx: TaskContext) -> Empty:
        if ctx.attempt <= params.times:
            raise RateLimitedError("slow down", retry_after=params.retry_after)
        return Empty()


class SpinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.5


class SpinResult(BaseModel):
    thread: str
    loops: int


class Spin(TaskType[SpinParams, SpinResult]):
    """CPU-bound: spins (holding the GIL most of the time), with checkpoints."""

    name = "test.spin"
    Params = SpinParams
    Result = SpinResult
    cpu_bound = True

    async def execute(self, params: SpinParams, ctx: TaskContext) -> SpinResult:
        deadline = time.monotonic() + params.seconds
        loops = 0
        while time.monotonic() < deadline:
            sum(range(20_000))  # a slice of pure-Python work
            loops += 1
            if loops % 20 == 0:
                ctx.check_cancelled()
                await ctx.update_progress({"loops": loops})
        return SpinResult(thread=threading.current_thread().name, loops=loops)


class WrongResult(TaskType[Empty, SpinResult]):
    """Returns something that is not its declared result."""

    name = "test.wrong_result"
    Params = Empty
    Result = SpinResult

    async def execute(self, params: Empty, ctx: TaskContext) -> Any:
        return {"thread": "x"}  # no "loops"


class ParentParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=3, ge=0)
    child_type: str = "diag.noop"
    child_parameters: dict[str, Any] = Field(default_factory=dict)
    # Children of diag.fail that fail at once, submitted first (fail-fast tests).
    failing: int = 0
    fail_first_attempt: bool = False  # fail retryably after submitting, on attempt 1
    sleep_after: float = 0.0  # keep running after submitting (cancel tests)


class ParentResult(BaseModel):
    submitted: int


class _Parent(TaskType[ParentParams, ParentResult]):
    Params = ParentParams
    Result = ParentResult
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.5, jitter=0.0)

    async def execute(self, params: ParentParams, ctx: TaskContext) -> ParentResult:
        import asyncio

        specs = [
            SubtaskSpec(
                task_type="diag.fail",
                parameters={"times": 1, "retryable": False},
                key=f"failing-{i}",
            )
            for i in range(params.failing)
        ] + [
            SubtaskSpec(task_type=params.child_type, parameters=params.child_parameters, key=str(i))
            for i in range(params.count)
        ]
        ids = await ctx.submit_subtasks(specs)
        if params.fail_first_attempt and ctx.attempt == 1:
            raise RetryableError("the parent fails once after creating its children")
        deadline = time.monotonic() + params.sleep_after
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            await asyncio.sleep(0.05)  # the task's own work
        return ParentResult(submitted=len(ids))


class CollectAllParent(_Parent):
    name = "test.parent"
    subtask_policy = SubtaskPolicy.COLLECT_ALL


class FailFastParent(_Parent):
    name = "test.parent_fail_fast"
    subtask_policy = SubtaskPolicy.FAIL_FAST


def task_types(settings: Settings) -> list[TaskType[Any, Any]]:
    return [Record(), RateLimited(), Spin(), WrongResult(), CollectAllParent(), FailFastParent()]


TASK_TYPES = task_types
