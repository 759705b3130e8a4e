"""Error classification: which failures are worth another attempt, and when.

Three kinds (STYLE.md, principle 7):

- **retryable**: timeouts, connection errors, HTTP 5xx (and 408) from a provider,
  ``RetryableError``, and anything unforeseen (a bug may be a transient fault we did not
  foresee; dramatiq does the same). Retried within the budget with the type's backoff.
- **non-retryable**: ``NonRetryableError``, a ``ValidationError`` (invalid parameters, or
  a result or request the task built wrong), HTTP 4xx. Dead-lettered at once.
- **rate-limited**: ``RateLimitedError`` and HTTP 429. Retried no sooner than the
  provider's ``Retry-After`` and without using up an attempt.

``classify`` is pure: the only randomness is the backoff's jitter, drawn from ``rng``.
"""

from __future__ import annotations

import random

import httpx
from pydantic import ValidationError
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.plugin import NonRetryableError, RateLimitedError, TaskCancelled

from taskcore_executor.outcomes import Cancelled, Dead, DeadReason, ErrorInfo, Outcome, Retry
from taskcore_executor.providers.base import parse_retry_after

# When a provider asks us to slow down without saying for how long.
DEFAULT_RATE_LIMIT_DELAY_S = 5.0


def classify(
    exc: BaseException,
    policy: RetryPolicy,
    retry_count: int,
    max_attempts: int,
    rng: random.Random | None = None,
) -> Outcome:
    """The outcome of an attempt that raised ``exc``, after ``retry_count`` retries so far
    within a budget of ``max_attempts`` attempts."""
    if isinstance(exc, TaskCancelled):
        return Cancelled()
    rate_limit_delay = _rate_limit_delay(exc)
    if rate_limit_delay is not None:
        return Retry(ErrorInfo.of(exc, True), rate_limit_delay, rate_limited=True)
    info = ErrorInfo.of(exc, is_retryable(exc))
    if not info.retryable:
        return Dead(DeadReason.NON_RETRYABLE, info)
    if retry_count + 1 >= max_attempts:
        return Dead(DeadReason.EXHAUSTED, info)
    return Retry(info, policy.next_delay(retry_count, rng))


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 408
    return not isinstance(exc, NonRetryableError | ValidationError)


def _rate_limit_delay(exc: BaseException) -> float | None:
    """Seconds a rate-limited provider asked us to wait; None if ``exc`` is no rate limit."""
    if isinstance(exc, RateLimitedError):
        return exc.retry_after if exc.retry_after is not None else DEFAULT_RATE_LIMIT_DELAY_S
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 429:
        after = parse_retry_after(exc.response.headers.get("retry-after"))
        return after if after is not None else DEFAULT_RATE_LIMIT_DELAY_S
    return None
