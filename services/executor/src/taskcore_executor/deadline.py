"""Stopping an attempt at its deadline: cooperatively first, then by abandoning it.

At the deadline the attempt's cancel flag is set with a timeout reason, so its next
``ctx.check_cancelled()`` raises ``TaskTimeout`` and it ends through the normal retry
path. An attempt that has not ended ``grace_s`` later is abandoned: the executor records
``TaskTimeout`` for it and frees its slot. Async code is cancelled at its next ``await``.
A CPU-bound attempt runs on a worker thread, and Python cannot stop a thread: its thread
goes on until the task's ``execute`` returns, holding one worker of the executor's CPU
pool (``min(TASKCORE_CONCURRENCY, cores)`` workers) meanwhile, and whatever it returns is
dropped. ``taskcore_abandoned_threads`` counts such threads; if they ever hold every
worker, later CPU-bound attempts wait for one and time out in turn (they are retried, and
dead-lettered once their budget is spent), while other task types run on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from taskcore import metrics
from taskcore.plugin import TaskTimeout

from taskcore_executor.context import RunningTask


async def within_deadline(
    work: Coroutine[Any, Any, Any],
    running: RunningTask,
    timeout_s: float | None,
    grace_s: float,
) -> Any:
    """``work``'s result, or ``TaskTimeout`` if it runs past ``timeout_s`` (+ the grace
    it is given to stop at a checkpoint). A result returned within the grace counts."""
    if timeout_s is None:
        return await work
    job = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({job}, timeout=timeout_s)
        if job in done:
            return job.result()
        running.time_out()
        done, _ = await asyncio.wait({job}, timeout=grace_s)
        if job in done:
            metrics.TASK_TIMEOUTS.labels(running.msg.task_type, "cooperative").inc()
            return job.result()
    except asyncio.CancelledError:
        job.cancel()
        raise
    job.cancel()
    job.add_done_callback(_retrieve)
    metrics.TASK_TIMEOUTS.labels(running.msg.task_type, "abandoned").inc()
    raise TaskTimeout(
        f"the attempt ran past its limit of {timeout_s:g} s and did not stop at a "
        f"checkpoint within {grace_s:g} s more; it was abandoned"
    )


def _retrieve(job: asyncio.Future[Any]) -> None:
    if not job.cancelled():
        job.exception()  # retrieved, so asyncio does not log it as never retrieved
