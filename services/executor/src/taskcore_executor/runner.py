"""Running one attempt of a task type: on the event loop, or on a worker thread when the
type is CPU-bound, and checking that what it returns is its declared result."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError
from taskcore import metrics
from taskcore.plugin import NonRetryableError, TaskContext
from taskcore.registry import AnyTaskType

from taskcore_executor.context import ExecutionContext, ThreadContext

log = logging.getLogger(__name__)


class InvalidResult(NonRetryableError):
    """The task returned something that is not its declared result: a bug in the task
    type, which another attempt would repeat."""


async def run_task(
    task_type: AnyTaskType, params: BaseModel, ctx: ExecutionContext, pool: ThreadPoolExecutor
) -> Any:
    """The attempt's result as JSON-ready data; raises whatever the task raised."""
    if task_type.cpu_bound:
        bridge = ThreadContext(ctx, asyncio.get_running_loop())
        running = pool.submit(_run_on_thread, task_type, params, bridge)
        try:
            result = await asyncio.wrap_future(running)
        except asyncio.CancelledError:
            _abandon(running, ctx.task_id)
            raise
    else:
        result = await task_type.execute(params, ctx)
    return result_json(task_type, result)


def _abandon(running: Future[Any], task_id: str) -> None:
    """Stop waiting for a thread that cannot be stopped (Python has no way to): it keeps
    its pool worker until the task returns, and is counted until then."""
    if running.cancel():
        return  # it had not started: nothing runs on
    log.warning("Task %s's thread is abandoned; it runs on until it returns.", task_id)
    metrics.ABANDONED_THREADS.inc()
    running.add_done_callback(lambda _: metrics.ABANDONED_THREADS.dec())


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
