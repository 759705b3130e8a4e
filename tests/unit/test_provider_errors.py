"""How provider failures map to task errors (HTTP statuses, transport errors, bad bodies)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from taskcore.plugin import NonRetryableError, RateLimitedError, RetryableError
from taskcore_executor.providers.base import (
    ChatMessage,
    ChatRequest,
    error_for_status,
    parse_retry_after,
)
from taskcore_executor.providers.openai_compat import OpenAICompatProvider

REQUEST = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_timeouts_are_retryable(status: int) -> None:
    assert isinstance(error_for_status("p", status, "oops", None), RetryableError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_request_errors_are_not_retryable(status: int) -> None:
    assert isinstance(error_for_status("p", status, "bad", None), NonRetryableError)


def test_429_is_rate_limited_with_the_retry_after_seconds() -> None:
    error = error_for_status("p", 429, "slow down", "7")
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 7.0


def test_success_is_no_error() -> None:
    assert error_for_status("p", 200, "{}", None) is None


def test_retry_after_reads_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30.0)


@pytest.mark.parametrize("header", [None, "", "soon"])
def test_retry_after_missing_or_unreadable_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


def _provider(handler: httpx.MockTransport) -> OpenAICompatProvider:
    # MockTransport stands for the external provider's HTTP API, nothing of ours.
    return OpenAICompatProvider("p", base_url="http://llm.invalid/v1", model="m", transport=handler)


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
async def test_transport_failures_are_retryable(exc: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    provider = _provider(httpx.MockTransport(fail))
    with pytest.raises(RetryableError):
        await provider.complete(REQUEST)
    await provider.aclose()


async def test_a_200_that_is_not_a_completion_is_retryable() -> None:
    provider = _provider(httpx.MockTransport(lambda r: httpx.Response(200, text="<html>")))
    with pytest.raises(RetryableError, match="not a chat completion"):
        await provider.complete(REQUEST)
    await provider.aclose()


async def test_401_from_the_api_is_not_retryable() -> None:
    provider = _provider(httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "key"})))
    with pytest.raises(NonRetryableError, match="401"):
        await provider.complete(REQUEST)
    await provider.aclose()
