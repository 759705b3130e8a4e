"""Budgets and quotas as callers meet them (``GET /v1/quota``, the 429 at submission) and
the providers' health as admins see it (``GET /v1/providers``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.settings import Settings
from taskcore.usage.budgets import Budgets, BudgetsConfig
from taskcore_executor.providers.base import ProviderKeyRefused
from taskcore_executor.providers.config import ProviderConfig
from taskcore_executor.providers.health import ProviderHealth
from taskcore_executor.providers.limits import MongoLimiter

from tests.integration.api.support import ALICE, BOB, ROOT, StartApi, submit

BUDGETS = BudgetsConfig.parse(
    {"free": {"daily_tokens": 1000, "monthly_cost": 2.0}, "users": {"alice": {"daily_cost": 0.5}}}
)


def tomorrow() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


async def test_quota_shows_each_configured_quota_and_budget_with_what_is_used(
    start_api: StartApi, store: Store
) -> None:
    api = await start_api(quota_free_per_minute=10, budgets=BUDGETS)
    async with api.client(BOB) as bob:
        await submit(bob)
        await submit(bob)
    hold = await Budgets(store.budgets, store.usage, BUDGETS).reserve(
        "bob", "free", 300, 25 * 10**7
    )
    assert hold is not None

    async with api.client(BOB) as bob:
        quota = (await bob.get("/v1/quota")).json()

    assert (quota["user_id"], quota["tier"], quota["currency"]) == ("bob", "free", "USD")
    assert quota["quotas"]["per_minute"]["limit"] == 10
    assert quota["quotas"]["per_minute"]["used"] == 2
    assert quota["budgets"]["daily_tokens"] == {
        "limit": 1000,
        "used": 300,
        "resets_at": tomorrow().isoformat().replace("+00:00", "Z"),
    }
    assert quota["budgets"]["monthly_cost"]["used"] == 0.25
    assert set(quota["budgets"]) == {"daily_tokens", "monthly_cost"}


async def test_a_user_without_quotas_or_budgets_has_none_to_show(start_api: StartApi) -> None:
    api = await start_api()
    async with api.client(ALICE) as alice:
        quota = (await alice.get("/v1/quota")).json()
    assert (quota["quotas"], quota["budgets"]) == ({}, {})


async def test_a_submission_while_a_budget_is_used_up_is_a_429_until_its_window_ends(
    start_api: StartApi, store: Store
) -> None:
    api = await start_api(budgets=BUDGETS)
    budgets = Budgets(store.budgets, store.usage, BUDGETS)
    hold = await budgets.reserve("alice", "paid", 10, 4 * 10**8)
    assert hold is not None
    async with api.client(ALICE) as alice:
        await submit(alice)  # 0.4 of 0.5 used: still fine
        await budgets.settle(hold, 10, 6 * 10**8)  # the call cost more than reserved

        single = await alice.post("/v1/tasks", json={"task_type": "diag.noop"})
        batch = await alice.post("/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}]})

    assert single.status_code == batch.status_code == 429
    error = single.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "daily cost" in error["message"]
    [budget] = error["details"]["budgets"]
    assert (budget["budget"], budget["limit"], budget["used"]) == ("daily_cost", 0.5, 0.6)
    wait = (tomorrow() - datetime.now(UTC)).total_seconds()
    assert math.isclose(int(single.headers["Retry-After"]), wait, abs_tol=5)
    async with api.client(BOB) as bob:
        assert (await bob.post("/v1/tasks", json={"task_type": "diag.noop"})).status_code == 202


async def test_providers_show_what_the_executors_report_to_admins_only(
    start_api: StartApi, settings: Settings
) -> None:
    api = await start_api()
    assert settings.mongo_url is not None
    store = Store(connect_mongo(settings.mongo_url), settings.mongo_db)
    openai = {"kind": "openai", "base_url": "http://x/v1", "model": "m"}
    configs = {
        "openai": ProviderConfig(**openai, api_key_env="OPENAI_KEY", max_concurrency=4),
        "spare": ProviderConfig(**openai, api_key_env="NO_SUCH_KEY"),
        "offline": ProviderConfig(kind="offline"),
    }
    limiter = MongoLimiter(store, {n: c.limits for n, c in configs.items()})
    tiers = {"paid": ["openai", "spare", "offline"], "free": ["offline"]}
    health = ProviderHealth(configs, tiers, {"OPENAI_KEY": "k"}, limiter=limiter, node="exec-1")
    try:
        async with limiter.acquire("openai"):
            await health.bench("openai", str(ProviderKeyRefused("openai answered HTTP 401")))
            await health.refresh(report=True)
    finally:
        await store.close()

    async with api.client(ROOT) as root, api.client(ALICE) as alice:
        listed = await root.get("/v1/providers")
        refused = await alice.get("/v1/providers")

    assert refused.status_code == 403
    items = {p["name"]: p for p in listed.json()["items"]}
    assert [items[n]["state"] for n in ("offline", "openai", "spare")] == [
        "ready",
        "benched",
        "no_key",
    ]
    benched = items["openai"]
    assert "401" in benched["bench_reason"]
    assert benched["benched_until"] is not None
    assert (benched["max_concurrency"], benched["concurrency_limit"]) == (4, 4)
    assert benched["concurrency_in_use"] == 1
    assert (benched["tiers"], benched["reported_by"]) == (["paid"], "exec-1")
    assert items["offline"]["concurrency_limit"] is None
    assert items["spare"]["key_configured"] is False


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/quota", "/v1/providers"])
async def test_the_spend_routes_need_a_credential(start_api: StartApi, path: str) -> None:
    api = await start_api()
    async with api.client() as anonymous:
        assert (await anonymous.get(path)).status_code == 401
