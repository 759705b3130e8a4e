"""Fair share inside a tier: one user's long tasks cannot take every slot."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.integration.executor.harness import System


async def test_a_user_with_long_tasks_leaves_slots_for_another_user(system: System) -> None:
    await system.start_aggregator()
    # Four slots, of which one user may hold two; tasks running over 1 s are long
    await system.start_executor(
        concurrency=4,
        prefetch=4,
        fair_share=0.5,
        fair_share_long_seconds=1.0,
        fair_share_defer_seconds=1.0,
        lease_seconds=30,
    )
    hog = await system.submit_many([("diag.sleep", {"seconds": 6})] * 6, user_id="hog")
    running = [await system.wait_status(t, "RUNNING") for t in hog[:2]]
    assert len(running) == 2

    # When another user submits behind the hog's backlog
    other = await system.submit("diag.noop", user_id="other")

    # Then it runs long before the hog's tasks are done
    await system.wait_status(other, "COMPLETED", within_s=6)
    statuses = [(await system.doc(t))["status"] for t in hog]
    assert statuses.count("RUNNING") <= 2, statuses
    assert "COMPLETED" not in statuses, "the other user did not wait for the backlog"
    # and the hog's tasks all complete in the end, each once
    for task_id in hog:
        await system.wait_status(task_id, "COMPLETED", within_s=40)
    assert set((await system.completions(hog)).values()) == {1}


def _handbacks() -> float:
    value = REGISTRY.get_sample_value("taskcore_fair_share_handbacks_total", {"tier": "paid"})
    return value or 0.0


async def test_a_single_user_with_short_tasks_is_never_handed_back(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor(concurrency=4, fair_share=0.5)
    before = _handbacks()
    tasks = await system.submit_many([("diag.noop", {})] * 40)
    for task_id in tasks:
        await system.wait_status(task_id, "COMPLETED")
    assert _handbacks() == before
