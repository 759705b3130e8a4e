"""LLM spend as callers see it: budgets at submission, their quotas and budgets
(``GET /v1/quota``), usage reports (``GET /v1/usage``) and the providers' health
(``GET /v1/providers``, admins).

Who sees what is decided in ``authz``; the sums come from the usage ledger
(``taskcore.usage.ledger``), the budgets from ``taskcore.usage.budgets``, the providers'
states from what the executors report (``taskcore_executor.providers.health``).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from taskcore import metrics
from taskcore.domain.usage import units_of
from taskcore.usage import ledger
from taskcore.usage.budgets import Standing
from taskcore.usage.ledger import GROUP_FIELDS, GroupField, UsageQuery
from taskcore.usage.windows import Period

from taskcore_api import authz
from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError

MAX_RANGE = timedelta(days=400)


class Allowance(BaseModel):
    limit: float = Field(description="Tokens, tasks, or an amount of the currency.")
    used: float
    resets_at: datetime


class QuotaView(BaseModel):
    """The caller's submission quotas and LLM budgets (only those configured for them)."""

    user_id: str
    tier: str
    currency: str
    quotas: dict[str, Allowance] = Field(description="`per_minute`, `per_day`: tasks submitted.")
    budgets: dict[str, Allowance] = Field(
        description="`daily_cost`, `monthly_cost` (in the currency), `daily_tokens`, "
        "`monthly_tokens`: UTC days and months."
    )


class UsageItem(BaseModel):
    group: dict[str, str | None]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    cost: float


class UsageReport(BaseModel):
    items: list[UsageItem]
    currency: str


class ProviderView(BaseModel):
    """One provider as the executors last reported it."""

    name: str
    kind: str
    model: str | None
    tiers: list[str]
    state: str = Field(description="`ready`, `no_key`, `benched` or `cooling_down`.")
    key_configured: bool
    benched_until: datetime | None
    bench_reason: str | None
    cooldown_until: datetime | None
    max_concurrency: int | None
    concurrency_limit: int | None = Field(description="After 429 back-off; null: unlimited.")
    concurrency_in_use: int
    rpm: int | None
    tpm: int | None
    reported_by: str
    reported_at: datetime


class ProviderList(BaseModel):
    items: list[ProviderView]


# ---- budgets ---------------------------------------------------------------------------


def _amount(standing: Standing) -> tuple[float, float]:
    limit, used = standing.limit.amount, standing.used
    if standing.limit.kind == "cost":
        return units_of(limit), units_of(used)
    return float(limit), float(used)


async def refuse_if_over_budget(deps: Deps, principal: Principal) -> None:
    """A 429 ``budget_exceeded`` while any of the caller's budgets is used up."""
    exhausted = await deps.budgets.exhausted(principal.user_id, principal.tier)
    if not exhausted:
        return
    until = max(s.resets_at for s in exhausted)
    retry_after = max(1, math.ceil((until - datetime.now(UTC)).total_seconds()))
    for s in exhausted:
        metrics.BUDGET_REFUSALS.labels(principal.tier, s.limit.name, "submission").inc()
    names = ", ".join(s.limit.name.replace("_", " ") for s in exhausted)
    details = {
        "budgets": [
            {"budget": s.limit.name, **dict(zip(("limit", "used"), _amount(s), strict=True)),
             "resets_at": s.resets_at.isoformat()}
            for s in exhausted
        ],
        "retry_after_seconds": retry_after,
    }  # fmt: skip
    raise ApiError(
        429,
        "budget_exceeded",
        f"Your {names} budget is used up until {until.isoformat()}.",
        details,
        headers={"Retry-After": str(retry_after)},
    )


async def quota_of(deps: Deps, principal: Principal) -> QuotaView:
    quotas = {
        f"per_{window}": Allowance(limit=limit, used=used, resets_at=resets_at)
        for window, limit, used, resets_at in await deps.quotas.standing(
            principal.user_id, principal.tier
        )
    }
    budgets = {}
    for s in await deps.budgets.standing(principal.user_id, principal.tier):
        limit, used = _amount(s)
        budgets[s.limit.name] = Allowance(limit=limit, used=used, resets_at=s.resets_at)
    return QuotaView(
        user_id=principal.user_id,
        tier=principal.tier,
        currency=deps.settings.currency,
        quotas=quotas,
        budgets=budgets,
    )


# ---- usage -----------------------------------------------------------------------------


def parse_group_by(values: list[str]) -> list[GroupField]:
    """``group_by`` repeated, comma-separated, or both; in the order given, once each."""
    fields: list[GroupField] = []
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name not in GROUP_FIELDS:
                raise ApiError(
                    422,
                    "validation_failed",
                    f"Cannot group usage by {name[:50]!r}.",
                    [{"field": "query.group_by", "reason": f"one of {', '.join(GROUP_FIELDS)}"}],
                )
            if name not in fields:
                fields.append(name)
    return fields


def usage_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """``from``/``to`` as given (a date-time without a zone is UTC), by default the current
    UTC month; refused when ``to`` is not after ``from`` or the range is over 400 days."""
    period = Period.of(datetime.now(UTC))
    start = _utc(start) if start else period.month_starts
    end = _utc(end) if end else period.month_ends
    problem = None
    if end <= start:
        problem = "must be after from"
    elif end - start > MAX_RANGE:
        problem = f"at most {MAX_RANGE.days} days after from"
    if problem:
        raise ApiError(
            422,
            "validation_failed",
            "The usage range is not valid.",
            [{"field": "query.to", "reason": problem}],
        )
    return start, end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def usage_report(
    deps: Deps,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    group_by: list[str],
) -> UsageReport:
    fields = parse_group_by(group_by)
    start, end = usage_range(start, end)
    query = UsageQuery(start, end, fields, authz.usage_scope(principal, fields))
    try:
        groups = await ledger.report(deps.store.usage, query)
    except ledger.TooManyGroups as exc:
        raise ApiError(
            422,
            "validation_failed",
            "The report would be too large.",
            [{"field": "query.group_by", "reason": f"{exc}: group by less, or a shorter range"}],
        ) from None
    items = [
        UsageItem(
            group=g.group,
            prompt_tokens=g.prompt_tokens,
            completion_tokens=g.completion_tokens,
            calls=g.calls,
            cost=units_of(g.cost_nanos),
        )
        for g in groups
    ]
    return UsageReport(items=items, currency=deps.settings.currency)


async def providers(deps: Deps) -> ProviderList:
    found: list[dict[str, Any]] = [
        doc["status"]
        async for doc in deps.store.limits.find({"kind": "provider"}, {"status": 1})
        if isinstance(doc.get("status"), dict)
    ]
    return ProviderList(items=[ProviderView.model_validate(s) for s in sorted(found, key=_name)])


def _name(status: dict[str, Any]) -> str:
    return str(status.get("name"))
