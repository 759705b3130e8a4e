"""The provider port: one chat completion, and how transport failures map to task errors.

Every provider speaks ``ChatRequest -> ChatResponse`` and raises only the errors of
``taskcore.plugin``, so the runner's retry policy needs no knowledge of HTTP:

- timeouts, connection errors, HTTP 5xx -> ``RetryableError``
- HTTP 429 -> ``RateLimitedError(retry_after=<Retry-After seconds>)``
- HTTP 401/403 -> ``ProviderKeyRefused``: the provider refuses our key, not the request,
  so the router benches it and asks the next provider
- HTTP 400/404/422 (and any other 4xx) -> ``NonRetryableError``
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from taskcore.plugin import NonRetryableError, RateLimitedError, RetryableError

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    messages: tuple[ChatMessage, ...]
    # None: the provider's configured model.
    model: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.2
    response_format: Literal["json", "text"] = "json"
    # A structured copy of what the prompt asks for (``intent`` names the task, ``inputs``
    # carries its parameters). Providers that read prose ignore it; the offline provider,
    # which cannot read prose, answers from it.
    intent: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt=self.prompt + other.prompt, completion=self.completion + other.completion
        )


class ChatResponse(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    usage: TokenUsage = TokenUsage()


class Provider(Protocol):
    """A source of chat completions (an HTTP API, or the built-in offline one)."""

    name: str
    model: str

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer ``request``; raise only ``RetryableError``, ``RateLimitedError`` or
        ``NonRetryableError`` (see the module docstring for which is which)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the provider is not used afterwards."""
        ...


class ProviderKeyRefused(NonRetryableError):
    """The provider answered 401 or 403: its key is missing, wrong, revoked or not allowed.
    Another provider may well answer the same request (the router falls back)."""


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_for_status(
    provider: str, status: int, body: str, retry_after: str | None
) -> Exception | None:
    """The task error an HTTP status means, or None for a success."""
    if status < 400:
        return None
    detail = f"{provider} answered HTTP {status}: {body[:300]}"
    if status == 429:
        return RateLimitedError(detail, retry_after=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return RetryableError(detail)
    if status in (401, 403):
        return ProviderKeyRefused(detail)
    return NonRetryableError(detail)
