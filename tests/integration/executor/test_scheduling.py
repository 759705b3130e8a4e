"""Priority, tiers, CPU-bound types and plugin discovery."""

from __future__ import annotations

from taskcore.registry import load_registry
from taskcore.settings import Settings
from taskcore.testing import wait_for_async

from tests.integration.executor import plugin
from tests.integration.executor.harness import PLUGIN, System


def test_task_types_are_discovered_from_entry_points_and_taskcore_plugins() -> None:
    registry = load_registry(Settings(plugins=[PLUGIN]))
    assert "diag.noop" in registry  # the diag entry point
    assert "test.spin" in registry  # named by TASKCORE_PLUGINS
    assert registry.get("test.spin").cpu_bound is True
    assert "test.spin" not in load_registry(Settings(plugins=[]))


async def test_under_load_higher_priority_tasks_start_first(system: System) -> None:
    # One slot and a prefetch of one: a backlog builds up in the broker.
    await system.start_executor(concurrency=1, prefetch=1)
    low = await system.submit_many([("test.record", {"seconds": 0.1})] * 12)

    async def backlog_started() -> bool:
        return len(plugin.STARTED) >= 1

    await wait_for_async(backlog_started, timeout=10, message="the backlog started")
    # When three urgent tasks arrive behind the backlog
    seen = len(plugin.STARTED)
    high = await system.submit_many([("test.record", {"seconds": 0.0})] * 3, priority=9)

    async def all_started() -> bool:
        return len(plugin.STARTED) == 15

    await wait_for_async(all_started, timeout=30, message="every task started")
    # then they start before the rest of the backlog: at most the running task and the one
    # prefetched go first
    order = plugin.STARTED
    assert set(order[seen : seen + 5]) >= set(high), (order.index(high[0]), seen)
    assert order[-1] in low


async def test_free_load_cannot_starve_paid_work(system: System) -> None:
    await system.start_aggregator()
    # Four slots: paid work may use all four, free work gets a pool of one of its own
    await system.start_executor(concurrency=4, prefetch=8, shutdown_grace_seconds=0.5)
    # Free tasks long enough that none finishes (freeing its one slot) during the test
    free = await system.submit_many([("test.record", {"seconds": 30})] * 6, tier="free")

    async def free_running() -> bool:
        return any(t in plugin.STARTED for t in free)

    await wait_for_async(free_running, timeout=10, message="free work running")
    # When paid work arrives while the free queue is full
    paid = await system.submit_many([("test.record", {"seconds": 0.0})] * 6)

    # then it all completes while the free backlog still waits
    for task_id in paid:
        await system.wait_status(task_id, "COMPLETED", within_s=10)
    started_free = [t for t in plugin.STARTED if t in free]
    assert len(started_free) == 1, started_free
    statuses = [(await system.doc(t))["status"] for t in free]
    assert statuses.count("QUEUED") >= 4


async def test_cpu_bound_type_runs_on_a_worker_thread_without_stalling_others(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor(lease_seconds=30)  # see test_cancel: the lease is not tested
    # Long enough that, on a loaded machine, the spin is still running when its start
    # has been folded and a noop has run (the in-process aggregator shares the process).
    spin = await system.submit("test.spin", {"seconds": 15.0})
    await system.wait_status(spin, "RUNNING", within_s=60)
    # While it spins, other tasks run on the event loop
    noop = await system.submit("diag.noop")
    await system.wait_status(noop, "COMPLETED", within_s=10)
    assert (await system.doc(spin))["status"] == "RUNNING"

    task = await system.wait_status(spin, "COMPLETED", within_s=60)
    assert task["result"]["thread"].startswith("taskcore-cpu")
    assert task["result"]["loops"] > 0
    assert (await system.events(spin, "task.progress")) != []
