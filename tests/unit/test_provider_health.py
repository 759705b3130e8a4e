"""Provider health in the router: key-less providers are never called, a refused key
(401/403) hands the call on and benches the provider, and the tier says why when no
provider is left. (The shared, cross-process side is in tests/integration/test_spend.py.)"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from taskcore.plugin import NonRetryableError, RetryableError
from taskcore_executor.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ProviderKeyRefused,
    TokenUsage,
    error_for_status,
)
from taskcore_executor.providers.config import ProviderConfig
from taskcore_executor.providers.health import ProviderHealth
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


def _config(key_env: str | None) -> ProviderConfig:
    return ProviderConfig(kind="openai", base_url="http://x", model="m", api_key_env=key_env)


def _router(
    *providers: ScriptedProvider, keys: dict[str, str | None], env: dict[str, str]
) -> ProviderRouter:
    configs = {p.name: _config(keys.get(p.name)) for p in providers}
    tiers = {"paid": [p.name for p in providers]}
    health = ProviderHealth(configs, tiers, env, bench_s=60)
    return ProviderRouter({p.name: p for p in providers}, tiers, health=health)


def test_401_and_403_mean_the_key_is_refused_and_other_4xx_stay_plain_refusals() -> None:
    assert isinstance(error_for_status("p", 401, "", None), ProviderKeyRefused)
    assert isinstance(error_for_status("p", 403, "", None), ProviderKeyRefused)
    refused = error_for_status("p", 400, "", None)
    assert isinstance(refused, NonRetryableError)
    assert not isinstance(refused, ProviderKeyRefused)


async def test_a_provider_without_its_key_is_never_called() -> None:
    keyless, other = ScriptedProvider("keyless"), ScriptedProvider("other")
    router = _router(keyless, other, keys={"keyless": "NOT_SET", "other": "SET"}, env={"SET": "k"})

    routed = await router.complete(REQUEST, tier="paid")

    assert (routed.provider, keyless.calls, other.calls) == ("other", 0, 1)


async def test_a_provider_without_a_key_variable_needs_no_key() -> None:
    local = ScriptedProvider("local")
    routed = await _router(local, keys={}, env={}).complete(REQUEST, tier="paid")
    assert routed.provider == "local"


async def test_a_refused_key_hands_the_call_to_the_next_provider_and_benches_the_first() -> None:
    revoked = ScriptedProvider("revoked", ProviderKeyRefused("revoked answered HTTP 401"))
    backup = ScriptedProvider("backup")
    router = _router(revoked, backup, keys={}, env={})

    first = await router.complete(REQUEST, tier="paid")
    second = await router.complete(REQUEST, tier="paid")

    assert (first.provider, second.provider) == ("backup", "backup")
    assert revoked.calls == 1  # benched: not asked again
    assert REGISTRY.get_sample_value("taskcore_provider_benched", {"provider": "revoked"}) == 1
    assert router.health is not None
    assert router.health.condition("revoked") == "benched"
    assert "401" in str(router.health.status("revoked")["bench_reason"])


async def test_a_tier_whose_providers_all_lack_keys_fails_for_good_saying_so() -> None:
    router = _router(ScriptedProvider("a"), keys={"a": "A_KEY"}, env={})
    with pytest.raises(NonRetryableError, match="A_KEY is not set"):
        await router.complete(REQUEST, tier="paid")


async def test_a_tier_whose_providers_are_all_benched_is_tried_again_later() -> None:
    only = ScriptedProvider("only", ProviderKeyRefused("only answered HTTP 403"))
    router = _router(only, keys={}, env={})

    with pytest.raises(RetryableError, match="every provider of the tier failed"):
        await router.complete(REQUEST, tier="paid")
    with pytest.raises(RetryableError, match="benched until"):
        await router.complete(REQUEST, tier="paid")
    assert only.calls == 1


async def test_a_bench_ends_by_itself() -> None:
    now = [1000.0]
    flaky = ScriptedProvider("flaky", ProviderKeyRefused("flaky answered HTTP 401"))
    configs = {"flaky": _config(None)}
    health = ProviderHealth(configs, {"paid": ["flaky"]}, {}, bench_s=30, clock=lambda: now[0])
    router = ProviderRouter({"flaky": flaky}, {"paid": ["flaky"]}, health=health)

    with pytest.raises(RetryableError):
        await router.complete(REQUEST, tier="paid")
    now[0] += 31
    routed = await router.complete(REQUEST, tier="paid")

    assert (routed.provider, flaky.calls) == ("flaky", 2)
