"""Route a chat request through a tier's providers, in order, with fallback.

A provider is skipped for the next one when it cannot grant a permit within a short
wait (saturated, cooling down after a 429, out of its per-minute budget) or when its
call fails in a way worth retrying elsewhere (``RetryableError``, ``RateLimitedError``).
A ``NonRetryableError`` (a bad request, a bad answer) stops the routing: another
provider would refuse the same request.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskcore.adapters.mongo import Store
from taskcore.metrics import PROVIDER_FALLBACKS, PROVIDER_TOKENS
from taskcore.plugin import RateLimitedError, RetryableError

from taskcore_executor.providers.base import ChatRequest, ChatResponse, Provider
from taskcore_executor.providers.config import ProviderConfig, ProvidersConfig
from taskcore_executor.providers.limits import Limiter, MongoLimiter, ProviderSaturated
from taskcore_executor.providers.offline import OfflineProvider
from taskcore_executor.providers.openai_compat import OpenAICompatProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutedResponse:
    response: ChatResponse
    provider: str


def estimate_tokens(request: ChatRequest) -> int:
    """A conservative token estimate for the per-minute budget: about four characters
    per prompt token, plus the whole completion allowance."""
    chars = sum(len(m.content) for m in request.messages)
    return math.ceil(chars / 4) + request.max_tokens


class ProviderRouter:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        tiers: Mapping[str, Sequence[str]],
        *,
        limiter: Limiter | None = None,
        default_tier: str = "paid",
        fallback_wait_s: float = 0.5,
        max_wait_s: float = 30.0,
        owned_store: Store | None = None,
    ) -> None:
        """``limiter`` None means no shared limits (tools and tests without a store);
        ``owned_store`` is closed with the router."""
        self.providers = dict(providers)
        self.tiers = {tier: list(names) for tier, names in tiers.items()}
        self.limiter = limiter
        self.default_tier = default_tier
        self.fallback_wait_s = fallback_wait_s
        self.max_wait_s = max_wait_s
        self._owned_store = owned_store
        self._closed = False

    def chain(self, tier: str) -> list[str]:
        return self.tiers.get(tier) or self.tiers[self.default_tier]

    async def complete(self, request: ChatRequest, *, tier: str) -> RoutedResponse:
        chain = self.chain(tier)
        errors: list[Exception] = []
        for position, name in enumerate(chain):
            last = position == len(chain) - 1
            try:
                response = await self._call(name, request, last=last)
            except (RetryableError, RateLimitedError) as exc:
                errors.append(exc)
                if not last:
                    log.info("Falling back from %s to %s: %s", name, chain[position + 1], exc)
                    PROVIDER_FALLBACKS.labels(name, chain[position + 1]).inc()
                continue
            return RoutedResponse(response=response, provider=name)
        raise _combined(errors)

    async def _call(self, name: str, request: ChatRequest, *, last: bool) -> ChatResponse:
        provider = self.providers[name]
        if self.limiter is None:
            response = await provider.complete(request)
        else:
            wait = self.max_wait_s if last else self.fallback_wait_s
            async with self.limiter.acquire(
                name, tokens=estimate_tokens(request), max_wait_s=wait
            ) as permit:
                try:
                    response = await provider.complete(request)
                except RateLimitedError as exc:
                    if not isinstance(exc, ProviderSaturated):
                        await self.limiter.report_rate_limited(name, exc.retry_after)
                    raise
                await self.limiter.settle(permit, response.usage.total)
            await self.limiter.report_success(name)
        PROVIDER_TOKENS.labels(name, "prompt").inc(response.usage.prompt)
        PROVIDER_TOKENS.labels(name, "completion").inc(response.usage.completion)
        return response

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for provider in self.providers.values():
            await provider.aclose()
        if self._owned_store is not None:
            await self._owned_store.close()


def _combined(errors: list[Exception]) -> Exception:
    """One error for a tier where every provider failed: rate limited (with the shortest
    wait any of them asked for) if any was, else retryable."""
    waits = [e.retry_after for e in errors if isinstance(e, RateLimitedError)]
    summary = "; ".join(str(e) for e in errors)
    if waits:
        known = [w for w in waits if w is not None]
        return RateLimitedError(
            f"every provider of the tier is busy: {summary}",
            retry_after=min(known) if known else None,
        )
    return RetryableError(f"every provider of the tier failed: {summary}")


def build_provider(name: str, config: ProviderConfig, env: Mapping[str, str]) -> Provider:
    if config.kind == "offline":
        return OfflineProvider(name, model=config.model or "offline-extractive-1")
    # ProviderConfig's validator guarantees both for kind openai.
    assert config.base_url is not None
    assert config.model is not None
    return OpenAICompatProvider(
        name,
        base_url=config.base_url,
        model=config.model,
        api_key=env.get(config.api_key_env) if config.api_key_env else None,
        timeout_s=config.timeout_seconds,
    )


def build_router(
    config: ProvidersConfig,
    store: Store | None,
    env: Mapping[str, str] | None = None,
    *,
    own_store: bool = False,
) -> ProviderRouter:
    """The router for ``config``, with limits shared through ``store`` (None: no limits);
    with ``own_store`` the router closes the store when it is closed."""
    env = os.environ if env is None else env
    limiter = None
    if store is not None:
        limiter = MongoLimiter(
            store,
            {name: p.limits for name, p in config.providers.items()},
            lease_s=config.lease_seconds,
            rate_window_s=config.rate_window_seconds,
            default_max_wait_s=config.max_wait_seconds,
        )
    return ProviderRouter(
        {name: build_provider(name, p, env) for name, p in config.providers.items()},
        config.tiers,
        limiter=limiter,
        default_tier=config.default_tier,
        fallback_wait_s=config.fallback_wait_seconds,
        max_wait_s=config.max_wait_seconds,
        owned_store=store if own_store else None,
    )
