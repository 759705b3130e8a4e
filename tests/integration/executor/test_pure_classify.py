"""Pure parts of the executor (no broker, no store): error classification, delay tiers,
slots by priority. Unit tests by cost; they live here with the executor's other tests."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from pydantic import BaseModel, ValidationError
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.plugin import NonRetryableError, RateLimitedError, RetryableError, TaskCancelled
from taskcore_executor.classify import DEFAULT_RATE_LIMIT_DELAY_S, classify
from taskcore_executor.outcomes import Cancelled, Dead, ErrorInfo, Retry, ceiling_tier
from taskcore_executor.priority_slots import PrioritySlots, SlotsClosed

POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, jitter=0.0)


def _http_error(status: int, retry_after: str | None = None) -> httpx.HTTPStatusError:
    headers = {"retry-after": retry_after} if retry_after else {}
    request = httpx.Request("POST", "https://llm.example/v1/chat")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def _validation_error() -> ValidationError:
    class M(BaseModel):
        n: int

    try:
        M.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        ConnectionResetError(),
        RetryableError("try again"),
        httpx.ConnectTimeout("slow"),
        _http_error(500),
        _http_error(503),
        _http_error(408),
        KeyError("a bug may be transient"),
    ],
)
def test_retryable_errors_retry_with_the_policy_backoff(exc: BaseException) -> None:
    outcome = classify(exc, POLICY, retry_count=1, max_attempts=3)
    assert isinstance(outcome, Retry)
    assert outcome.uses_attempt
    assert outcome.delay_s == 2.0  # base 1 s doubled once, no jitter
    assert outcome.error.retryable


@pytest.mark.parametrize(
    "exc", [NonRetryableError("no"), _validation_error(), _http_error(400), _http_error(404)]
)
def test_non_retryable_errors_dead_letter_at_once(exc: BaseException) -> None:
    outcome = classify(exc, POLICY, retry_count=0, max_attempts=3)
    assert isinstance(outcome, Dead)
    assert outcome.reason == "non_retryable"
    assert not outcome.error.retryable


def test_the_last_attempt_of_the_budget_dead_letters_as_exhausted() -> None:
    assert isinstance(classify(RetryableError(), POLICY, 1, 3), Retry)
    outcome = classify(RetryableError(), POLICY, 2, 3)
    assert isinstance(outcome, Dead)
    assert outcome.reason == "attempts_exhausted"


@pytest.mark.parametrize(
    ("exc", "delay"),
    [
        (RateLimitedError(retry_after=7.0), 7.0),
        (RateLimitedError(), DEFAULT_RATE_LIMIT_DELAY_S),
        (_http_error(429, "12"), 12.0),
        (_http_error(429), DEFAULT_RATE_LIMIT_DELAY_S),
    ],
)
def test_rate_limits_wait_at_least_retry_after_and_use_no_attempt(
    exc: BaseException, delay: float
) -> None:
    # even on the last attempt of the budget
    outcome = classify(exc, POLICY, retry_count=2, max_attempts=3)
    assert isinstance(outcome, Retry)
    assert outcome.delay_s == delay
    assert not outcome.uses_attempt
    assert outcome.delay_tier_s >= delay


def test_rate_limit_tier_is_never_shorter_than_retry_after_but_backoff_is_the_closest() -> None:
    info = ErrorInfo("RateLimitedError", "slow down", True)
    limited = Retry(info, 3.0, rate_limited=True)
    backoff = Retry(info, 3.0)
    assert limited.delay_tier_s == 5
    assert backoff.delay_tier_s == 2
    assert ceiling_tier(0.2) == 1
    assert ceiling_tier(10**6) == 3600


def test_cancellation_is_its_own_outcome() -> None:
    assert isinstance(classify(TaskCancelled(), POLICY, 0, 3), Cancelled)


def test_jitter_comes_from_the_given_rng() -> None:
    jittery = RetryPolicy(max_attempts=5, base_delay_s=10.0, jitter=0.2)
    a = classify(RetryableError(), jittery, 0, 5, rng=random.Random(7))
    b = classify(RetryableError(), jittery, 0, 5, rng=random.Random(7))
    assert isinstance(a, Retry)
    assert isinstance(b, Retry)
    assert a.delay_s == b.delay_s
    assert 8.0 <= a.delay_s <= 12.0


async def test_slots_go_to_the_highest_priority_waiter_first() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    await slots.acquire(0)  # the one slot is taken

    async def wait(name: str, priority: int) -> None:
        async with slots.hold(priority):
            order.append(name)

    waiters = [
        asyncio.create_task(wait("low-1", 0)),
        asyncio.create_task(wait("high", 9)),
        asyncio.create_task(wait("low-2", 0)),
        asyncio.create_task(wait("mid", 5)),
    ]
    await asyncio.sleep(0)  # let every waiter queue up
    slots.release()
    await asyncio.gather(*waiters)
    assert order == ["high", "mid", "low-1", "low-2"]
    assert slots.in_use == 0


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(0)
    waiter = asyncio.create_task(slots.acquire(3))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.in_use == 0
    await asyncio.wait_for(slots.acquire(0), 1)


async def test_closing_the_slots_fails_every_waiter() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(0)
    waiter = asyncio.create_task(slots.acquire(0))
    await asyncio.sleep(0)
    slots.close()
    with pytest.raises(SlotsClosed):
        await waiter
    with pytest.raises(SlotsClosed):
        await slots.acquire(9)
