"""LLM usage, the caller's quotas and budgets, and (admins) the providers' health."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from taskcore_api.auth import Principal, authenticate, require_admin
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.handlers import spend
from taskcore_api.handlers.spend import ProviderList, QuotaView, UsageReport
from taskcore_api.schemas import ClientTime

router = APIRouter(prefix="/v1", tags=["usage"], responses=errors(401, 503))


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="LLM usage and cost, grouped",
    description=(
        "Every answered provider call between `from` (inclusive) and `to` (exclusive), "
        "RFC 3339, by default the current UTC month, summed per group of `group_by` "
        "(`user`, `team`, `task_type`, `provider`, `day`; repeat it or separate with "
        "commas; none: one total). A user sees their own calls, and with "
        "`group_by=team` also their teams'; an admin sees everyone's. `cost` is in "
        "`currency`."
    ),
    responses=errors(422),
)
async def get_usage(
    principal: Principal = Depends(authenticate),
    deps: Deps = Depends(get_deps),
    start: Annotated[ClientTime | None, Query(alias="from", description="Inclusive.")] = None,
    end: Annotated[ClientTime | None, Query(alias="to", description="Exclusive.")] = None,
    group_by: Annotated[
        list[str] | None,
        Query(max_length=10, description="user, team, task_type, provider, day"),
    ] = None,
) -> UsageReport:
    return await spend.usage_report(deps, principal, start, end, group_by or [])


@router.get(
    "/quota",
    response_model=QuotaView,
    summary="Your submission quotas and LLM budgets",
    description=(
        "Each quota and budget configured for you, with its `limit`, what is `used` in "
        "the current window and when that window ends (`resets_at`). A submission while "
        "a budget is used up is a 429 `budget_exceeded`."
    ),
)
async def get_quota(
    principal: Principal = Depends(authenticate), deps: Deps = Depends(get_deps)
) -> QuotaView:
    return await spend.quota_of(deps, principal)


@router.get(
    "/providers",
    response_model=ProviderList,
    summary="LLM providers' health (administrators)",
    description=(
        "Each configured provider as the executors last reported it (every few seconds): "
        "`ready`, `no_key` (never called), `benched` (it refused our key: skipped until "
        "`benched_until`) or `cooling_down` (after a 429), and its concurrency limit and "
        "use."
    ),
    responses=errors(403),
)
async def get_providers(
    principal: Principal = Depends(require_admin), deps: Deps = Depends(get_deps)
) -> ProviderList:
    return await spend.providers(deps)
