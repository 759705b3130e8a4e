"""LLM provider configuration, read from ``TASKCORE_PROVIDERS`` (JSON).

    {
      "providers": {
        "openai":  {"kind": "openai", "base_url": "https://api.openai.com/v1",
                    "api_key_env": "OPENAI_API_KEY", "model": "gpt-4o-mini",
                    "max_concurrency": 5, "rpm": 500, "tpm": 200000, "timeout_seconds": 60,
                    "prices": {"input_per_million": 0.15, "output_per_million": 0.60}},
        "offline": {"kind": "offline", "max_concurrency": 8, "rpm": 600, "tpm": 100000}
      },
      "tiers": {"paid": ["openai", "offline"], "free": ["offline"]},
      "default_tier": "paid",
      "fallback_wait_seconds": 0.5,
      "max_wait_seconds": 30,
      "rate_window_seconds": 60,
      "lease_seconds": 30,
      "bench_seconds": 300
    }

``providers`` names each provider. ``kind`` is ``openai`` (any OpenAI-compatible
chat-completions API: ``base_url`` and ``model`` required, the key read from the
environment variable named by ``api_key_env``) or ``offline`` (built in, no network,
deterministic extractive answers). ``max_concurrency``, ``rpm`` (requests per minute) and
``tpm`` (tokens per minute) are shared by every executor process through MongoDB; leave
one out for no limit on it.

``prices`` (per million tokens, in ``TASKCORE_CURRENCY``) make each call's cost; a provider
without prices costs nothing. A provider whose ``api_key_env`` names a variable that is
unset or empty is never called (a provider without ``api_key_env`` needs no key: a local
vLLM, say); one that answers 401 or 403 is *benched* for ``bench_seconds`` (every
executor process skips it meanwhile) and the call goes to the next provider.

``tiers`` lists, per user tier, the providers to try in order: a task uses the first
provider that has a permit within ``fallback_wait_seconds`` and answers; a provider that
is saturated, cooling down after a 429, or failing with a retryable error hands the call
to the next one. The last provider of a tier is waited on for up to ``max_wait_seconds``.
A tier not listed uses ``default_tier``.

Unset, the configuration is the offline provider alone, for every tier.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from taskcore.domain.usage import FREE, Prices

from taskcore_executor.providers.limits import ProviderLimits

ENV_VAR = "TASKCORE_PROVIDERS"


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["openai", "offline"]
    base_url: str | None = None
    api_key_env: str | None = None
    model: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    prices: Prices = FREE

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> ProviderConfig:
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValueError("an openai provider needs base_url and model")
        return self

    @property
    def limits(self) -> ProviderLimits:
        return ProviderLimits(max_concurrency=self.max_concurrency, rpm=self.rpm, tpm=self.tpm)

    def api_key(self, env: Mapping[str, str]) -> str | None:
        """The key from the environment; None when none is named or the variable is empty."""
        return (env.get(self.api_key_env) or None) if self.api_key_env else None

    def key_missing(self, env: Mapping[str, str]) -> bool:
        """It names a key variable that holds nothing: calling it could only fail."""
        return self.api_key_env is not None and self.api_key(env) is None


def _offline_only() -> dict[str, ProviderConfig]:
    return {"offline": ProviderConfig(kind="offline", max_concurrency=8, rpm=600, tpm=100_000)}


class ProvidersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderConfig] = Field(default_factory=_offline_only)
    tiers: dict[str, list[str]] = Field(
        default_factory=lambda: {"paid": ["offline"], "free": ["offline"]}
    )
    default_tier: str = "paid"
    fallback_wait_seconds: float = Field(default=0.5, ge=0)
    max_wait_seconds: float = Field(default=30.0, ge=0)
    rate_window_seconds: float = Field(default=60.0, gt=0)
    lease_seconds: float = Field(default=30.0, gt=0)
    bench_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _tiers_name_known_providers(self) -> ProvidersConfig:
        for tier, names in self.tiers.items():
            if not names:
                raise ValueError(f"tier {tier!r} lists no providers")
            unknown = [n for n in names if n not in self.providers]
            if unknown:
                raise ValueError(f"tier {tier!r} names unknown providers {unknown}")
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} is not one of the tiers")
        return self


def load_providers_config(env: Mapping[str, str] | None = None) -> ProvidersConfig:
    """The configuration in ``TASKCORE_PROVIDERS``, or offline only when it is unset.
    Raises ``pydantic.ValidationError`` naming the bad field."""
    raw = (os.environ if env is None else env).get(ENV_VAR, "").strip()
    return ProvidersConfig.model_validate_json(raw) if raw else ProvidersConfig()
