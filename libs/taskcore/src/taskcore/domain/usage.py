"""LLM usage as the domain keeps it: tokens, calls and cost, per provider, added up.

Cost is an exact integer of *nano-units* of the configured currency (1e-9 of a dollar,
say). Prices are given per million tokens, so a price with up to three decimals costs a
whole number of nano-units per token and sums never drift, as floats would; the MongoDB
stand-in refuses Decimal128, and integers sum in the store (``$sum``) as they are.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

NANOS_PER_UNIT = 10**9
# Nano-units per token for a price of 1 per million tokens.
_NANOS_PER_TOKEN_AT_ONE = Decimal(NANOS_PER_UNIT) / Decimal(1_000_000)


def nanos_of(amount: float | int | str | Decimal) -> int:
    """An amount of currency (5, 0.25, "0.000123") in nano-units, rounded half to even."""
    exact = Decimal(str(amount)) * NANOS_PER_UNIT
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def units_of(nanos: int) -> float:
    """Nano-units as the nearest float amount of currency (for JSON answers)."""
    return float(Decimal(nanos) / NANOS_PER_UNIT)


class Prices(BaseModel):
    """What a provider charges, in the configured currency per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: Decimal = Field(default=Decimal(0), ge=0)
    output_per_million: Decimal = Field(default=Decimal(0), ge=0)

    @field_validator("input_per_million", "output_per_million", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # 0.15 given as a JSON number is the decimal 0.15, not the binary float near it.
        return Decimal(str(value)) if isinstance(value, float) else value

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int) -> int:
        exact = (
            self.input_per_million * prompt_tokens + self.output_per_million * completion_tokens
        ) * _NANOS_PER_TOKEN_AT_ONE
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


FREE = Prices()


class ProviderUsage(BaseModel):
    """Tokens, calls and cost (nano-units) of one provider, or of all of them."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost_nanos: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def _sum(self, other: ProviderUsage) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens + other.prompt_tokens,
            "completion_tokens": self.completion_tokens + other.completion_tokens,
            "calls": self.calls + other.calls,
            "cost_nanos": self.cost_nanos + other.cost_nanos,
        }

    def plus(self, other: ProviderUsage) -> ProviderUsage:
        return ProviderUsage(**self._sum(other))


class Usage(ProviderUsage):
    """A task's usage: the totals, and the same per provider."""

    by_provider: dict[str, ProviderUsage] = Field(default_factory=dict)

    def plus(self, other: ProviderUsage) -> Usage:
        by_provider = dict(self.by_provider)
        for name, part in (other.by_provider if isinstance(other, Usage) else {}).items():
            mine = by_provider.get(name)
            by_provider[name] = part if mine is None else mine.plus(part)
        return Usage(**self._sum(other), by_provider=by_provider)

    @classmethod
    def of_call(cls, call: UsageRecorded) -> Usage:
        part = ProviderUsage(
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            calls=1,
            cost_nanos=call.cost_nanos,
        )
        return cls(**part.model_dump(), by_provider={call.provider: part})


def combined(*usages: Usage | None) -> Usage | None:
    """The sum of those present; None when none is (a task that never called a provider)."""
    present = [u for u in usages if u is not None]
    if not present:
        return None
    total = present[0]
    for usage in present[1:]:
        total = total.plus(usage)
    return total


class UsageRecorded(BaseModel):
    """The data of a ``task.usage_recorded`` event: one provider call, answered.

    It names who and what the call was for, so the usage ledger (grouped by user, team,
    task type, provider and day) is derived from the event alone.
    """

    model_config = ConfigDict(frozen=True)

    provider: str
    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_nanos: int = Field(ge=0)
    currency: str
    user_id: str
    team_id: str | None = None
    task_type: str
    tier: str
    attempt: int = 0

    @classmethod
    def parse(cls, data: dict[str, Any]) -> UsageRecorded | None:
        """The call an event's data records; None if it is not one (never raises: the
        fold takes every event)."""
        try:
            return cls.model_validate(data)
        except ValidationError:
            return None
