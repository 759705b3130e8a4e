"""Running one attempt of a task type: on the event loop, or on a worker thread when the
type is CPU-bound, and checking that what it returns is its declared result."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from taskcore.plugin import NonRetryableError, TaskContext
from taskcore.registry import AnyTaskType

from taskcore_executor.context import ExecutionContext, ThreadContext


class InvalidResult(NonRetryableError):
    """The task returned something that is not its declared result: a bug in the task
    type, which another attempt would repeat."""


async def run_task(
    task_type: AnyTaskType, params: BaseModel, ctx: ExecutionContext, pool: ThreadPoolExecutor
) -> Any:
    """The attempt's result as JSON-ready data; raises whatever the task raised."""
    if task_type.cpu_bound:
        loop = asyncio.get_running_loop()
        bridge = ThreadContext(ctx, loop)
        result = await loop.run_in_executor(pool, _run_on_thread, task_type, params, bridge)
    else:
        result = await task_type.execute(params, ctx)
    return result_json(task_type, result)


def _run_on_thread(task_type: AnyTaskType, params: BaseModel, ctx: TaskContext) -> Any:
    # The thread's own loop runs the coroutine; the executor's loop stays free for
    # heartbeats, cancel signals and other tasks.
    return asyncio.run(task_type.execute(params, ctx))


def result_json(task_type: AnyTaskType, result: Any) -> Any:
    try:
        model = (
            result
            if isinstance(result, task_type.Result)
            else task_type.Result.model_validate(result)
        )
        return model.model_dump(mode="json")
    except (ValidationError, PydanticSerializationError) as exc:
        raise InvalidResult(
            f"{task_type.name} returned a result that is not a {task_type.Result.__name__}: {exc}"
        ) from exc
