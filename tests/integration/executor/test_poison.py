"""Messages no executor can act on are dead-lettered with a reason; the queue flows on."""

from __future__ import annotations

import json
import time

from taskcore.submission import NewTask, submit_tasks

from tests.integration.executor.harness import System, text_headers


async def test_poison_messages_are_dead_lettered_while_the_queue_keeps_flowing(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor(concurrency=2, prefetch=4, max_message_bytes=4096)
    good_before = await system.submit_many([("diag.noop", {})] * 10)

    # Given every kind of unreadable message, interleaved with good work:
    headers = {"x-task-type": "diag.noop", "x-retry-count": 0, "x-dispatch": 1}
    ghost = {"task_id": "ghost", "task_type": "diag.noop", "user_id": "alice"}
    # a task stored with a type nobody registered, and one whose parameters do not validate
    unknown_type, bad_params = (
        r.task.id
        for r in await submit_tasks(
            system.store,
            system.publisher,
            [
                NewTask(user_id="alice", task_type="no.such.type", parameters={}),
                NewTask(user_id="alice", task_type="diag.sleep", parameters={"seconds": "long"}),
            ],
        )
    )
    await system.publish_raw(b"\x00 not json at all")  # not JSON
    await system.publish_raw(b'{"task_id": 42}', {**headers, "x-task-id": "42"})  # not a task
    await system.publish_raw(json.dumps(ghost).encode())  # no headers
    await system.publish_raw(  # headers naming another task than the body
        json.dumps(ghost).encode(), {**headers, "x-task-id": "someone-else"}
    )
    await system.publish_raw(json.dumps(ghost).encode(), {**headers, "x-task-id": "ghost"})
    # a huge message, refused unread; and a dispatch its task never issued (forged)
    huge = {**ghost, "parameters": {"blob": "x" * 10_000}}
    await system.publish_raw(json.dumps(huge).encode(), {**headers, "x-task-id": "ghost"})
    forged = {"task_id": good_before[0], "task_type": "diag.noop", "user_id": "alice"}
    await system.publish_raw(
        json.dumps({**forged, "dispatch": 7}).encode(),
        {**headers, "x-task-id": good_before[0], "x-dispatch": 7},
    )
    began = time.monotonic()
    good_after = await system.submit_many([("diag.noop", {})] * 10)

    # then the good work all completes, promptly
    for task_id in good_before + good_after:
        await system.wait_status(task_id, "COMPLETED", within_s=15)
    assert time.monotonic() - began < 10

    # and each unreadable message is in the dead-letter queue with its reason
    dead = await system.dead_letters(9)
    reasons = sorted(text_headers(m)["x-dead-reason"] for m in dead)
    assert reasons == sorted(
        [
            "malformed",  # not JSON
            "malformed",  # not a task message
            "missing_headers",
            "malformed",  # header/body disagree
            "unknown_task",
            "unknown_type",
            "invalid_parameters",
            "too_large",
            "unknown_dispatch",
        ]
    )
    for message in dead:
        assert text_headers(message)["x-dead-error"]
    # and the two stored tasks are DEAD_LETTER, with the reason in their error
    assert (await system.wait_status(unknown_type, "DEAD_LETTER"))["error"]["type"] == (
        "UnknownTaskType"
    )
    bad = await system.wait_status(bad_params, "DEAD_LETTER")
    assert bad["error"]["type"] == "ValidationError"
    assert bad["error"]["retryable"] is False
