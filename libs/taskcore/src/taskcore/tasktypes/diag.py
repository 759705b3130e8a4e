"""Diagnostic task types, for smoke tests, benchmarks and operators checking a deployment:
registered only under ``taskcore dev`` or with TASKCORE_ENABLE_DIAG=1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcore.plugin import (
    NonRetryableError,
    RetryableError,
    SubtaskPolicy,
    SubtaskSpec,
    TaskContext,
    TaskType,
)
from taskcore.settings import Settings


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Noop(TaskType[Empty, Empty]):
    name = "diag.noop"
    description = "Does nothing and completes."
    Params = Empty
    Result = Empty

    async def execute(self, params: Empty, ctx: TaskContext) -> Empty:
        return Empty()


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=1.0, ge=0, le=3600, description="How long to sleep.")


class SleepResult(BaseModel):
    slept_seconds: float


class Sleep(TaskType[SleepParams, SleepResult]):
    name = "diag.sleep"
    description = "Sleeps, reporting progress and honouring cancellation at checkpoints."
    Params = SleepParams
    Result = SleepResult
    # Its longest sleep and a minute more: a submission may ask for less.
    timeout_seconds = 3660.0

    async def execute(self, params: SleepParams, ctx: TaskContext) -> SleepResult:
        start = time.monotonic()
        step = min(0.1, params.seconds) or 0.0
        while (elapsed := time.monotonic() - start) < params.seconds:
            ctx.check_cancelled()
            await ctx.update_progress({"elapsed_seconds": round(elapsed, 3), "of": params.seconds})
            await asyncio.sleep(min(step, params.seconds - elapsed))  # the task's own work
        return SleepResult(slept_seconds=round(time.monotonic() - start, 3))


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = Field(default=1, ge=0, description="Fail while earlier attempts < times.")
    retryable: bool = True


class FailResult(BaseModel):
    attempts_before_success: int


class Fail(TaskType[FailParams, FailResult]):
    name = "diag.fail"
    description = "Fails while the task's earlier attempts (over its whole life) < times."
    Params = FailParams
    Result = FailResult

    async def execute(self, params: FailParams, ctx: TaskContext) -> FailResult:
        earlier = ctx.attempt - 1
        if earlier < params.times:
            error = RetryableError if params.retryable else NonRetryableError
            raise error(f"diag.fail: attempt {ctx.attempt} fails ({params.times} to fail)")
        return FailResult(attempts_before_success=earlier)


class FanoutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=10, ge=0, le=100_000)
    child_type: str = "diag.noop"
    child_parameters: dict[str, Any] = Field(default_factory=dict)


class FanoutResult(BaseModel):
    submitted: int


class Fanout(TaskType[FanoutParams, FanoutResult]):
    name = "diag.fanout"
    description = "Spawns `count` children; COMPLETED if all complete, else COMPLETED_WITH_ERRORS."
    Params = FanoutParams
    Result = FanoutResult
    subtask_policy = SubtaskPolicy.COLLECT_ALL

    def planned_children(self, params: FanoutParams) -> int:
        return params.count

    async def execute(self, params: FanoutParams, ctx: TaskContext) -> FanoutResult:
        specs = [
            SubtaskSpec(task_type=params.child_type, parameters=params.child_parameters, key=str(i))
            for i in range(params.count)
        ]
        ids = await ctx.submit_subtasks(specs)
        return FanoutResult(submitted=len(ids))


class FanoutFailFast(Fanout):
    name = "diag.fanout_fail_fast"
    description = "Spawns `count` children; the first that fails cancels the rest: FAILED."
    subtask_policy = SubtaskPolicy.FAIL_FAST


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = Field(default=None, description="Any JSON value; it comes back as the result.")


class EchoResult(BaseModel):
    value: Any


class Echo(TaskType[EchoParams, EchoResult]):
    name = "diag.echo"
    description = "Completes at once with result {value}: checks that workflows pass values."
    Params = EchoParams
    Result = EchoResult

    async def execute(self, params: EchoParams, ctx: TaskContext) -> EchoResult:
        return EchoResult(value=params.value)


def task_types(settings: Settings) -> list[TaskType[Any, Any]]:
    return [Noop(), Sleep(), Fail(), Fanout(), FanoutFailFast(), Echo()]
