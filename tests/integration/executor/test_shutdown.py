"""Graceful shutdown: stop taking work, let running tasks finish within the grace period,
hand back the rest; nothing is lost or completed twice."""

from __future__ import annotations

import time

from tests.integration.executor.harness import System


async def test_shutdown_finishes_running_tasks_and_gives_back_waiting_ones(
    system: System,
) -> None:
    await system.start_aggregator()
    executor = await system.start_executor(concurrency=2, prefetch=8, shutdown_grace_seconds=10)
    running = await system.submit_many([("diag.sleep", {"seconds": 1.0})] * 2)
    for task_id in running:
        await system.wait_status(task_id, "RUNNING")
    waiting = await system.submit_many([("diag.noop", {})] * 4)

    # When the executor is told to stop
    began = time.monotonic()
    await executor.stop()
    # then it waited for the two running tasks, well within the grace period
    assert time.monotonic() - began < 8
    for task_id in running:
        await system.wait_status(task_id, "COMPLETED")
    # and gave the prefetched ones back without running them
    for task_id in waiting:
        doc = await system.doc(task_id)
        assert doc["exec"]["attempts"] == 0
        assert doc["status"] == "QUEUED"

    # and another executor runs them, each exactly once
    await system.start_executor()
    for task_id in waiting:
        await system.wait_status(task_id, "COMPLETED")
    assert set((await system.completions(running + waiting)).values()) == {1}


async def test_a_task_outlasting_the_grace_period_is_handed_back_and_re_run(
    system: System,
) -> None:
    await system.start_aggregator()
    executor = await system.start_executor(shutdown_grace_seconds=0.5)
    task_id = await system.submit("diag.sleep", {"seconds": 3.0})
    await system.wait_status(task_id, "RUNNING")

    began = time.monotonic()
    await executor.stop()
    assert time.monotonic() - began < 5  # did not wait for the 3 s sleep
    doc = await system.doc(task_id)
    assert doc["exec"]["claimed_by"] is None  # the claim was released, not left to expire
    assert doc["exec"]["done_no"] == -1

    # A new executor claims it at once (no lease to wait out) and completes it once
    second = await system.start_executor()
    task = await system.wait_status(task_id, "COMPLETED", within_s=15)
    assert task["attempts"] == 2
    assert task["execution_node_id"] == second.settings.node_id
    assert (await system.completions([task_id]))[task_id] == 1
