"""Idempotent claims: redeliveries never complete a task twice; a dead holder's task is
claimed again once its lease has expired."""

from __future__ import annotations

import asyncio

from taskcore.adapters.mongo import now_ms
from taskcore.messages.envelope import Dispatch, TaskMessage
from taskcore.outbox import amqp_message
from taskcore.testing import wait_for_async

from tests.integration.executor.harness import System


async def _redeliver(system: System, task_id: str, dispatch: int = 1) -> None:
    """Publish the task's dispatch message again, as the relay or a requeue would."""
    doc = await system.doc(task_id)
    msg = TaskMessage(
        task_id=task_id,
        task_type=doc["task_type"],
        user_id=doc["user_id"],
        parameters=doc["parameters"],
        dispatch=dispatch,
    )
    d = Dispatch(message=msg)
    await system.publisher.publish(d.exchange, d.key(), amqp_message(d))


async def _queue_empty(system: System, name: str = "tasks.paid.queue") -> bool:
    channel = await system.connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count == 0
    finally:
        await channel.close()


async def test_redelivered_finished_work_is_acked_and_dropped(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    task_ids = await system.submit_many([("diag.noop", {})] * 5)
    for task_id in task_ids:
        await system.wait_status(task_id, "COMPLETED")

    # When every dispatch is delivered again, three times over
    for _ in range(3):
        for task_id in task_ids:
            await _redeliver(system, task_id)

    # then each is consumed and dropped: no new attempt, still one completion each
    async def drained() -> bool:
        attempts = [(await system.doc(t))["exec"]["attempts"] for t in task_ids]
        return await _queue_empty(system) and attempts == [1] * len(task_ids)

    await wait_for_async(drained, timeout=10, message="redeliveries dropped")
    # one more noop after the duplicates proves they were all consumed by now
    last = await system.submit("diag.noop")
    await system.wait_status(last, "COMPLETED")
    assert set((await system.completions(task_ids)).values()) == {1}
    for task_id in task_ids:
        assert len(await system.events(task_id, "task.started")) == 1


async def test_task_held_by_a_dead_executor_runs_again_once_its_lease_expires(
    system: System,
) -> None:
    await system.start_aggregator()
    # Given a task claimed by an executor that died (its lease runs 2 more seconds)
    task_id = await system.submit("diag.noop")
    await system.store.tasks.update_one(
        {"_id": task_id},
        {
            "$set": {
                "exec.claimed_by": "dead-node",
                "exec.claim_no": 1,
                "exec.lease_until": now_ms() + 2000,
            }
        },
    )
    executor = await system.start_executor()

    # then this executor does not run it while the lease holds, but once it expired
    task = await system.wait_status(task_id, "COMPLETED", within_s=15)
    [started] = await system.events(task_id, "task.started")
    assert started["data"]["node_id"] == executor.settings.node_id
    assert started["occurred_at"].timestamp() * 1000 >= (
        (await system.events(task_id, "task.submitted"))[0]["occurred_at"].timestamp() * 1000
    )
    assert task["attempts"] == 1
    assert (await system.completions([task_id]))[task_id] == 1


async def test_an_executor_that_lost_its_lease_records_no_outcome(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor(lease_seconds=1.5)
    task_id = await system.submit("diag.sleep", {"seconds": 1.0})
    await system.wait_status(task_id, "RUNNING")

    # When another executor takes the claim over (as after a long pause of this one)
    await system.store.tasks.update_one(
        {"_id": task_id},
        {"$set": {"exec.claimed_by": "usurper", "exec.lease_until": now_ms() + 60_000}},
    )

    # then this executor abandons its attempt: its message is acked, no outcome recorded
    async def acked() -> bool:
        return await _queue_empty(system)

    await wait_for_async(acked, timeout=10, message="the message acked")
    await asyncio.sleep(1.5)  # the attempt would have finished by now; nothing may follow
    doc = await system.doc(task_id)
    assert doc["exec"]["claimed_by"] == "usurper"
    assert doc["exec"]["done_no"] == -1
    assert await system.events(task_id, "task.completed") == []
    assert await system.events(task_id, "task.cancelled") == []
