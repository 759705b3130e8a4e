"""The router tries a tier's providers in order and falls back on retryable failures."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from taskcore.plugin import NonRetryableError, RateLimitedError, RetryableError
from taskcore_executor.providers.base import ChatMessage, ChatRequest, ChatResponse, TokenUsage
from taskcore_executor.providers.config import load_providers_config
from taskcore_executor.providers.router import ProviderRouter

REQUEST = ChatRequest(messages=(ChatMessage(role="user", content="hi"),))


class ScriptedProvider:
    """Stands for an external provider: raises the scripted errors, then answers."""

    def __init__(self, name: str, *errors: Exception) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.errors = list(errors)
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ChatResponse(text="{}", model=self.model, usage=TokenUsage(prompt=3, completion=1))

    async def aclose(self) -> None:
        return None


def _router(*providers: ScriptedProvider, tiers: dict[str, list[str]]) -> ProviderRouter:
    return ProviderRouter({p.name: p for p in providers}, tiers, default_tier="paid")


def _fallbacks(src: str, dst: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskcore_provider_fallbacks_total", {"from_provider": src, "to_provider": dst}
    )
    return value or 0.0


async def test_the_first_provider_of_the_tier_answers_when_healthy() -> None:
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    routed = await _router(a, b, tiers={"paid": ["a", "b"]}).complete(REQUEST, tier="paid")
    assert (routed.provider, a.calls, b.calls) == ("a", 1, 0)


@pytest.mark.parametrize("error", [RetryableError("503"), RateLimitedError("429", retry_after=3)])
async def test_a_failing_provider_falls_back_to_the_next(error: Exception) -> None:
    a, b = ScriptedProvider("ra", error), ScriptedProvider("rb")
    before = _fallbacks("ra", "rb")
    routed = await _router(a, b, tiers={"paid": ["ra", "rb"]}).complete(REQUEST, tier="paid")
    assert routed.provider == "rb"
    assert _fallbacks("ra", "rb") == before + 1


async def test_fallback_follows_the_configured_order() -> None:
    a = ScriptedProvider("x1", RetryableError("down"))
    b = ScriptedProvider("x2", RetryableError("down"))
    c = ScriptedProvider("x3")
    router = _router(c, b, a, tiers={"paid": ["x1", "x2", "x3"]})
    routed = await router.complete(REQUEST, tier="paid")
    assert routed.provider == "x3"
    assert (a.calls, b.calls, c.calls) == (1, 1, 1)


async def test_a_non_retryable_error_stops_the_routing() -> None:
    a, b = ScriptedProvider("n1", NonRetryableError("400")), ScriptedProvider("n2")
    with pytest.raises(NonRetryableError):
        await _router(a, b, tiers={"paid": ["n1", "n2"]}).complete(REQUEST, tier="paid")
    assert b.calls == 0


async def test_all_rate_limited_raises_rate_limited_with_the_shortest_wait() -> None:
    a = ScriptedProvider("l1", RateLimitedError("429", retry_after=9))
    b = ScriptedProvider("l2", RateLimitedError("429", retry_after=2))
    with pytest.raises(RateLimitedError) as caught:
        await _router(a, b, tiers={"paid": ["l1", "l2"]}).complete(REQUEST, tier="paid")
    assert caught.value.retry_after == 2


async def test_all_failing_raises_retryable() -> None:
    a = ScriptedProvider("f1", RetryableError("503"))
    b = ScriptedProvider("f2", RetryableError("timeout"))
    with pytest.raises(RetryableError, match="every provider"):
        await _router(a, b, tiers={"paid": ["f1", "f2"]}).complete(REQUEST, tier="paid")


async def test_each_tier_uses_its_own_providers() -> None:
    paid, free = ScriptedProvider("paid1"), ScriptedProvider("free1")
    router = _router(paid, free, tiers={"paid": ["paid1"], "free": ["free1"]})
    assert (await router.complete(REQUEST, tier="free")).provider == "free1"
    assert (await router.complete(REQUEST, tier="gold")).provider == "paid1"  # default tier


def test_the_default_configuration_is_offline_only() -> None:
    config = load_providers_config({})
    assert config.tiers == {"paid": ["offline"], "free": ["offline"]}
    assert config.providers["offline"].kind == "offline"


def test_configuration_is_read_from_the_environment() -> None:
    env = {
        "TASKCORE_PROVIDERS": '{"providers": {"oa": {"kind": "openai", "base_url": "http://x/v1",'
        ' "model": "gpt-4o-mini", "api_key_env": "K", "max_concurrency": 2},'
        ' "offline": {"kind": "offline"}}, "tiers": {"paid": ["oa", "offline"],'
        ' "free": ["offline"]}}'
    }
    config = load_providers_config(env)
    assert config.tiers["paid"] == ["oa", "offline"]
    assert config.providers["oa"].limits.max_concurrency == 2


@pytest.mark.parametrize(
    "raw",
    [
        '{"providers": {"a": {"kind": "offline"}}, "tiers": {"paid": ["b"]}}',
        '{"providers": {"a": {"kind": "openai"}}, "tiers": {"paid": ["a"]}}',
        '{"providers": {"a": {"kind": "offline", "rpm": 0}}, "tiers": {"paid": ["a"]}}',
    ],
)
def test_a_bad_configuration_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        load_providers_config({"TASKCORE_PROVIDERS": raw})
