"""Route a chat request through a tier's providers, in order, with fallback.

A provider is skipped for the next one when it has no key or is benched (``health``),
when it cannot grant a permit within a short wait (saturated, cooling down after a 429,
out of its per-minute budget), when it refuses our key (401/403: it is benched), or when
its call fails in a way worth retrying elsewhere (``RetryableError``,
``RateLimitedError``). Any other ``NonRetryableError`` (a bad request, a bad answer, a
budget the call would pass) stops the routing: another provider would refuse it too.

Each call is metered through the task's ``Spend``: its estimated tokens and cost are
reserved against the user's budgets before the call, and what it used (priced by the
provider's ``prices``) is recorded once the provider answers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from taskcore.adapters.mongo import Store
from taskcore.domain.usage import FREE, Prices
from taskcore.metrics import PROVIDER_FALLBACKS, PROVIDER_TOKENS
from taskcore.plugin import NonRetryableError, NoSpend, RateLimitedError, RetryableError, Spend

from taskcore_executor.providers.base import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderKeyRefused,
)
from taskcore_executor.providers.config import ProviderConfig, ProvidersConfig
from taskcore_executor.providers.health import ProviderHealth
from taskcore_executor.providers.limits import Limiter, MongoLimiter, ProviderSaturated
from taskcore_executor.providers.offline import OfflineProvider
from taskcore_executor.providers.openai_compat import OpenAICompatProvider

log = logging.getLogger(__name__)


NO_SPEND = NoSpend()


@dataclass(frozen=True)
class RoutedResponse:
    response: ChatResponse
    provider: str
    cost_nanos: int = 0  # what the call cost, in nano-units of the currency


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """About four characters per prompt token (a little over for most languages' text)."""
    return math.ceil(sum(len(m.content) for m in request.messages) / 4)


def estimate_tokens(request: ChatRequest) -> int:
    """A conservative token estimate for the per-minute and budget reservations: the
    prompt's estimate plus the whole completion allowance."""
    return estimate_prompt_tokens(request) + request.max_tokens


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
        prices: Mapping[str, Prices] | None = None,
        health: ProviderHealth | None = None,
    ) -> None:
        """``limiter`` None means no shared limits (tools and tests without a store);
        ``owned_store`` is closed with the router; a provider without ``prices`` costs
        nothing; ``health`` None calls every provider (no keys to check, no benches)."""
        self.providers = dict(providers)
        self.tiers = {tier: list(names) for tier, names in tiers.items()}
        self.limiter = limiter
        self.prices = dict(prices or {})
        self.health = health
        self.default_tier = default_tier
        self.fallback_wait_s = fallback_wait_s
        self.max_wait_s = max_wait_s
        self._owned_store = owned_store
        self._closed = False

    def start(self) -> None:
        """Begin sharing the providers' health (idempotent; the first call does it too)."""
        if self.health is not None:
            self.health.start()

    def chain(self, tier: str) -> list[str]:
        return self.tiers.get(tier) or self.tiers[self.default_tier]

    async def complete(
        self, request: ChatRequest, *, tier: str, spend: Spend | None = None
    ) -> RoutedResponse:
        """Answer ``request`` with the first provider of the tier that can; ``spend``
        meters each call (None: budgets and usage are not tracked)."""
        chain, skipped = self.chain(tier), dict[str, str]()
        if self.health is not None:
            self.start()
            chain, skipped = await self.health.callable(chain)
        if not chain:
            raise _none_callable(tier, skipped)
        errors: list[Exception] = []
        for position, name in enumerate(chain):
            last = position == len(chain) - 1
            try:
                return await self._call(name, request, last=last, spend=spend or NO_SPEND)
            except ProviderKeyRefused as exc:
                if self.health is not None:
                    await self.health.bench(name, str(exc))
                errors.append(exc)
            except (RetryableError, RateLimitedError) as exc:
                errors.append(exc)
            if not last:
                log.info("Falling back from %s to %s: %s", name, chain[position + 1], errors[-1])
                PROVIDER_FALLBACKS.labels(name, chain[position + 1]).inc()
        raise _combined(errors)

    async def _call(
        self, name: str, request: ChatRequest, *, last: bool, spend: Spend
    ) -> RoutedResponse:
        prices = self.prices.get(name, FREE)
        estimate = prices.cost_nanos(estimate_prompt_tokens(request), request.max_tokens)
        async with spend.call(name, tokens=estimate_tokens(request), cost_nanos=estimate) as call:
            response = await self._limited(name, request, last=last)
            cost = prices.cost_nanos(response.usage.prompt, response.usage.completion)
            await call.record(
                model=response.model,
                prompt_tokens=response.usage.prompt,
                completion_tokens=response.usage.completion,
                cost_nanos=cost,
            )
        PROVIDER_TOKENS.labels(name, "prompt").inc(response.usage.prompt)
        PROVIDER_TOKENS.labels(name, "completion").inc(response.usage.completion)
        return RoutedResponse(response=response, provider=name, cost_nanos=cost)

    async def _limited(self, name: str, request: ChatRequest, *, last: bool) -> ChatResponse:
        """The provider's answer, within its shared limits."""
        provider = self.providers[name]
        if self.limiter is None:
            return await provider.complete(request)
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
        return response

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.health is not None:
            await self.health.stop()
        for provider in self.providers.values():
            await provider.aclose()
        if self._owned_store is not None:
            await self._owned_store.close()


def _none_callable(tier: str, skipped: Mapping[str, str]) -> Exception:
    """No provider of the tier may be called now. Missing keys need a new deployment
    (dead-letter, replay once fixed); a bench ends by itself (try again later)."""
    reasons = "; ".join(f"{name}: {why}" for name, why in skipped.items())
    message = f"no provider of tier {tier!r} can be called now ({reasons})"
    if all(why.startswith("no API key") for why in skipped.values()):
        return NonRetryableError(message)
    return RetryableError(message)


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
    # Keys refused (401/403) count as failures worth a later attempt: the benches end.
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
        api_key=config.api_key(env),
        timeout_s=config.timeout_seconds,
    )


def build_router(
    config: ProvidersConfig,
    store: Store | None,
    env: Mapping[str, str] | None = None,
    *,
    own_store: bool = False,
    node: str = "",
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
    health = ProviderHealth(
        config.providers,
        config.tiers,
        env,
        limiter=limiter,
        bench_s=config.bench_seconds,
        node=node,
    )
    return ProviderRouter(
        {name: build_provider(name, p, env) for name, p in config.providers.items()},
        config.tiers,
        limiter=limiter,
        default_tier=config.default_tier,
        fallback_wait_s=config.fallback_wait_seconds,
        max_wait_s=config.max_wait_seconds,
        owned_store=store if own_store else None,
        prices={name: p.prices for name, p in config.providers.items()},
        health=health,
    )
