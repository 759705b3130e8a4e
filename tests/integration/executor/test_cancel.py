"""Cancellation, executor side: the store update and ``control.cancel`` signal of
docs/design.md ("Cancellation") are performed directly, as the API does."""

from __future__ import annotations

from datetime import UTC, datetime

from taskcore.adapters.mongo import now_ms
from taskcore.cancellation import Canceller, CancelResult

from tests.integration.executor.harness import System


async def test_a_cancelled_queued_task_never_runs(system: System) -> None:
    await system.start_aggregator()
    # Given a queued task (no executor running yet), cancelled
    task_id = await system.submit("diag.noop")
    result = await Canceller(system.store, system.publisher).cancel(
        task_id, {"reason": "user asked"}
    )
    assert result is CancelResult.CANCELLED
    # when an executor starts and receives its message
    await system.start_executor()
    later = await system.submit("diag.noop")
    await system.wait_status(later, "COMPLETED")
    # then the task was acked and dropped without running
    task = await system.wait_status(task_id, "CANCELLED")
    assert task["attempts"] == 0
    assert await system.events(task_id, "task.started") == []
    assert (await system.doc(task_id))["exec"]["attempts"] == 0


async def test_a_running_task_is_cancelled_within_two_seconds_by_the_signal(
    system: System,
) -> None:
    await system.start_aggregator()
    # Two executors with a long lease: the heartbeat (every 10 s) cannot be what stops it
    await system.start_executor(lease_seconds=30)
    await system.start_executor(lease_seconds=30)
    task_id = await system.submit("diag.sleep", {"seconds": 60})
    await system.wait_status(task_id, "RUNNING")

    asked = datetime.now(UTC)
    result = await Canceller(system.store, system.publisher).cancel(
        task_id, {"reason": "user asked"}
    )
    assert result is CancelResult.SIGNALLED
    task = await system.wait_status(task_id, "CANCELLED", within_s=10)
    # the executor recorded the cancel within two seconds (its own timestamp, so the
    # aggregator's lag on a loaded machine does not count)
    [stopped] = await system.events(task_id, "task.cancelled")
    assert (stopped["occurred_at"] - asked).total_seconds() < 2.0
    assert task["error"] is None
    assert len(await system.events(task_id, "task.cancel_requested")) == 1
    assert len(await system.events(task_id, "task.cancelled")) == 1
    assert not (await system.doc(task_id))["exec"]["open"]


async def test_a_lost_cancel_signal_is_caught_by_the_heartbeat(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor(lease_seconds=1.5)  # a beat every 0.5 s
    task_id = await system.submit("diag.sleep", {"seconds": 60})
    await system.wait_status(task_id, "RUNNING")
    # When only the store says so (the control.cancel signal was lost)
    await system.store.tasks.update_one({"_id": task_id}, {"$set": {"cancel_requested": True}})
    await system.wait_status(task_id, "CANCELLED", within_s=5)


async def test_a_redelivered_message_of_a_task_being_cancelled_closes_it(system: System) -> None:
    await system.start_aggregator()
    # Given a task whose cancel was requested while it ran on an executor that then died
    task_id = await system.submit("diag.noop")
    await system.store.tasks.update_one(
        {"_id": task_id},
        {
            "$set": {
                "cancel_requested": True,
                "exec.claimed_by": "dead-node",
                "exec.claim_no": 1,
                "exec.lease_until": now_ms() + 1000,
            }
        },
    )
    # when its message reaches a live executor: it waits out the lease, then closes it
    await system.start_executor()
    task = await system.wait_status(task_id, "CANCELLED", within_s=10)
    assert task["attempts"] == 0


async def test_a_cancelled_cpu_bound_task_stops_at_its_next_checkpoint(system: System) -> None:
    await system.start_aggregator()
    # The test is about the cancel signal reaching a worker thread. With the tests' short
    # lease, a loop starved by the spinning thread on a loaded machine can let the lease
    # lapse, and the cancel then rightly closes the task as abandoned instead (covered by
    # test_a_redelivered_message_of_a_task_being_cancelled_closes_it).
    await system.start_executor(lease_seconds=30)
    task_id = await system.submit("test.spin", {"seconds": 120})
    # A spinning thread shares the process with the in-process aggregator: on a loaded
    # machine its fold of task.started can take a while, so the wait is generous.
    await system.wait_status(task_id, "RUNNING", within_s=60)
    assert await Canceller(system.store, system.publisher).cancel(task_id, {"reason": "stop"}) is (
        CancelResult.SIGNALLED
    )
    await system.wait_status(task_id, "CANCELLED", within_s=5)


async def test_a_parent_cancelled_while_running_cancels_its_children_and_waits_for_them(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor()
    parent = await system.submit(
        "test.parent",
        {
            "count": 4,
            "child_type": "diag.sleep",
            "child_parameters": {"seconds": 60},
            "sleep_after": 60,
        },
    )
    await system.wait_status(parent, "RUNNING")

    async def children() -> list[str]:
        docs = await system.store.tasks.find({"parent_task_id": parent}).to_list(None)
        return [d["_id"] for d in docs]

    from taskcore.testing import wait_for_async

    async def four_children() -> list[str]:
        found = await children()
        return found if len(found) == 4 else []

    kids = await wait_for_async(four_children, timeout=10, message="children created")
    assert await Canceller(system.store, system.publisher).cancel(
        parent, {"reason": "stop it all"}
    ) is (CancelResult.SIGNALLED)
    for child in kids:
        await system.wait_status(child, "CANCELLED", within_s=10)
    final = await system.wait_status(
        parent, "CANCELLED", "FAILED", "COMPLETED_WITH_ERRORS", within_s=15
    )
    # a parent is never terminal before its children
    closing = (await system.events(parent))[-1]
    for child in kids:
        [event] = await system.events(child, "task.cancelled")
        assert event["occurred_at"] <= closing["occurred_at"]
    assert final["subtasks"]["cancelled"] == 4
    assert final["status"] == "CANCELLED", final["status"]
