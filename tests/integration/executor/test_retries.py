"""Retries through the TTL delay queues, dead letters, rate limits: on the real broker."""

from __future__ import annotations

import itertools
from datetime import datetime

import aio_pika
from taskcore.domain.retry_policy import delay_queue_name
from taskcore.testing import wait_for_async

from tests.integration.executor.harness import System, text_headers


def _times(events: list[dict[str, object]]) -> list[datetime]:
    return [e["occurred_at"] for e in events]  # type: ignore[misc]


async def _delay_queue_depth(system: System, tier_s: int) -> int:
    channel = await system.connection.channel()
    try:
        queue = await channel.declare_queue(delay_queue_name(tier_s), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_flaky_task_succeeds_after_retries_with_growing_delays(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    # Given diag.fail failing twice (backoff 1 s then 2 s, +/-20% jitter: tiers 1 s and 2 s)
    task_id = await system.submit("diag.fail", {"times": 2})

    # then it shows RETRYING with its next attempt's time, while its message waits in a
    # delay queue (not unacked in a consumer)
    retrying = await system.wait_status(task_id, "RETRYING")
    assert retrying["next_attempt_at"] is not None
    assert retrying["error"]["retryable"] is True

    async def waiting_in_a_delay_queue() -> bool:
        return (await _delay_queue_depth(system, 1)) + (await _delay_queue_depth(system, 2)) == 1

    await wait_for_async(waiting_in_a_delay_queue, timeout=5, message="message in a delay queue")

    # and it completes on the third attempt
    done = await system.wait_status(task_id, "COMPLETED")
    assert done["attempts"] == 3
    assert done["retry_count"] == 2
    assert done["result"] == {"attempts_before_success": 2}

    # with the delays observed between the attempts (1 s tier, then 2 s tier)
    started = _times(await system.events(task_id, "task.started"))
    assert len(started) == 3
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started)]
    assert gaps[0] >= 0.95, gaps
    assert gaps[1] >= 1.95, gaps
    retries = await system.events(task_id, "task.retrying")
    assert [e["data"]["delay_seconds"] for e in retries] == [1, 2]
    assert [e["data"]["retry_count"] for e in retries] == [1, 2]
    assert (await system.completions([task_id]))[task_id] == 1


async def test_non_retryable_failure_is_dead_lettered_at_once(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    task_id = await system.submit("diag.fail", {"times": 5, "retryable": False})

    task = await system.wait_status(task_id, "DEAD_LETTER")
    assert task["attempts"] == 1
    assert task["retry_count"] == 0
    assert task["error"]["type"] == "NonRetryableError"
    assert await system.events(task_id, "task.retrying") == []

    [dead] = await system.dead_letters(1)
    headers = text_headers(dead)
    assert headers["x-task-id"] == task_id
    assert headers["x-dead-reason"] == "non_retryable"
    assert "diag.fail: attempt 1 fails" in headers["x-dead-error"]
    assert headers["x-retry-count"] == "0"
    [event] = await system.events(task_id, "task.dead_lettered")
    assert event["data"]["reason"] == "non_retryable"


async def test_exhausted_attempts_dead_letter_after_max_attempts(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    task_id = await system.submit("diag.fail", {"times": 10}, max_attempts=3)

    task = await system.wait_status(task_id, "DEAD_LETTER")
    assert task["attempts"] == 3
    assert task["retry_count"] == 2  # max_attempts - 1, as the contract says
    [dead] = await system.dead_letters(1)
    headers = text_headers(dead)
    assert headers["x-dead-reason"] == "attempts_exhausted"
    assert headers["x-retry-count"] == "2"
    assert len(await system.events(task_id, "task.retrying")) == 2


async def test_rate_limit_waits_for_retry_after_without_using_an_attempt(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    # Given a type allowed ONE attempt, rate-limited once with Retry-After 1.5 s
    task_id = await system.submit("test.rate_limited", {"retry_after": 1.5})

    task = await system.wait_status(task_id, "COMPLETED")
    # then the rate limit did not use up its attempt budget
    assert task["retry_count"] == 0
    assert task["attempts"] == 2
    # and the retry came no sooner than Retry-After (the 2 s tier, not the closer 1 s)
    [retry] = await system.events(task_id, "task.retrying")
    assert retry["data"]["delay_seconds"] == 2
    assert retry["data"]["uses_attempt"] is False
    first, second = _times(await system.events(task_id, "task.started"))
    assert (second - first).total_seconds() >= 1.5


async def test_a_result_that_is_not_the_declared_one_is_a_non_retryable_error(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor()
    task_id = await system.submit("test.wrong_result")

    task = await system.wait_status(task_id, "DEAD_LETTER")
    assert task["error"]["type"] == "InvalidResult"
    assert task["attempts"] == 1


async def test_retry_message_carries_the_count_in_our_own_header(system: System) -> None:
    # Given no executor running, a retry published by one that then stopped
    executor = await system.start_executor()
    task_id = await system.submit("diag.fail", {"times": 1})
    await wait_for_async(
        lambda: _has_retry(system, task_id), timeout=10, message="a retry scheduled"
    )
    await executor.stop()
    # when the message comes back from the delay queue, it has x-retry-count 1 and
    # sits in the task queue (nobody consumes it now)
    channel = await system.connection.channel()
    queue = await channel.get_queue("tasks.paid.queue")

    async def back_in_the_queue() -> aio_pika.abc.AbstractIncomingMessage | None:
        return await queue.get(no_ack=False, fail=False)

    message = await wait_for_async(back_in_the_queue, timeout=10, message="message returned")
    assert message is not None
    headers = text_headers(message)
    assert headers["x-retry-count"] == "1"
    assert headers["x-dispatch"] == "2"
    await message.nack(requeue=True)
    await channel.close()


async def _has_retry(system: System, task_id: str) -> bool:
    doc = await system.doc(task_id)
    return bool(doc["exec"]["done_no"] == 1 and doc["exec"]["open"])
