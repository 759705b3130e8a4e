"""Budgets on the real store: reservations that fit are counted and settled, one that
would pass a limit is refused and counts nothing, concurrent reservations never pass a
limit together, and a month's counters start from what the ledger says was spent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from taskcore.adapters.mongo import Store
from taskcore.domain.events import EventType, TaskEvent
from taskcore.plugin import BudgetExceeded
from taskcore.usage import ledger
from taskcore.usage.budgets import Budgets, BudgetsConfig

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)


def budgets(
    store: Store, config: dict[str, object], clock: list[datetime] | None = None
) -> Budgets:
    now = clock or [NOW]
    return Budgets(store.budgets, store.usage, BudgetsConfig.parse(config), clock=lambda: now[0])


async def used(b: Budgets, user: str = "alice", tier: str = "paid") -> dict[str, int]:
    return {s.limit.name: s.used for s in await b.standing(user, tier)}


async def test_a_reservation_that_fits_is_counted_and_settled_with_what_the_call_used(
    store: Store,
) -> None:
    b = budgets(store, {"paid": {"daily_tokens": 1000, "monthly_cost": 1.0}})

    hold = await b.reserve("alice", "paid", 300, 2_000)
    assert hold is not None
    assert await used(b) == {"daily_tokens": 300, "monthly_cost": 2_000}

    await b.settle(hold, 120, 900)
    assert await used(b) == {"daily_tokens": 120, "monthly_cost": 900}


async def test_a_call_that_would_pass_a_budget_is_refused_and_counts_nothing(
    store: Store,
) -> None:
    b = budgets(store, {"paid": {"daily_tokens": 1000}, "users": {"alice": {"monthly_cost": 0.5}}})
    await b.reserve("alice", "paid", 900, 100)

    with pytest.raises(BudgetExceeded) as refused:
        await b.reserve("alice", "paid", 101, 100)

    assert refused.value.budget == "daily_tokens"
    assert refused.value.resets_at == datetime(2026, 12, 5, tzinfo=UTC)
    assert "1000 tokens" in str(refused.value)
    assert await used(b) == {"daily_tokens": 900, "monthly_cost": 100}
    with pytest.raises(BudgetExceeded, match="monthly cost") as by_cost:
        await b.reserve("alice", "paid", 1, 500_000_000)
    assert by_cost.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


async def test_a_user_without_a_budget_reserves_nothing(store: Store) -> None:
    b = budgets(store, {"free": {"daily_tokens": 1}})
    assert await b.reserve("alice", "paid", 10**9, 10**12) is None
    assert await b.standing("alice", "paid") == []
    assert await store.budgets.count_documents({}) == 0


async def test_concurrent_reservations_never_pass_a_budget_together(store: Store) -> None:
    b = budgets(store, {"free": {"daily_tokens": 1000}})

    async def reserve() -> bool:
        try:
            return await b.reserve("bob", "free", 70, 0) is not None
        except BudgetExceeded:
            return False

    granted = await asyncio.gather(*(reserve() for _ in range(40)))

    assert sum(granted) == 1000 // 70
    assert await used(b, "bob", "free") == {"daily_tokens": 70 * (1000 // 70)}


async def test_a_new_day_starts_from_zero_and_a_new_month_from_zero_too(store: Store) -> None:
    clock = [NOW]
    b = budgets(store, {"paid": {"daily_tokens": 100, "monthly_tokens": 250}}, clock)
    await b.reserve("alice", "paid", 100, 0)
    clock[0] = NOW + timedelta(days=1)
    await b.reserve("alice", "paid", 100, 0)
    assert await used(b) == {"daily_tokens": 100, "monthly_tokens": 200}
    clock[0] = NOW + timedelta(days=2)
    with pytest.raises(BudgetExceeded, match="monthly tokens"):
        await b.reserve("alice", "paid", 51, 0)

    clock[0] = datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert await used(b) == {"daily_tokens": 0, "monthly_tokens": 0}


async def test_a_months_counters_start_from_what_the_ledger_says_was_spent(store: Store) -> None:
    def call(seq: int, at: datetime, tokens: int) -> TaskEvent:
        data = {
            "provider": "p",
            "model": "m",
            "prompt_tokens": tokens,
            "completion_tokens": 0,
            "cost_nanos": tokens * 10,
            "currency": "USD",
            "user_id": "alice",
            "task_type": "llm.chat",
            "tier": "paid",
        }
        return TaskEvent(
            event_id=f"t:{seq}",
            task_id="t",
            sequence=seq,
            type=EventType.USAGE_RECORDED,
            occurred_at=at,
            data=data,
        )

    await ledger.record(
        store.usage,
        [
            call(2, NOW - timedelta(hours=1), 40),  # today
            call(3, NOW - timedelta(days=2), 25),  # earlier this month
            call(4, NOW - timedelta(days=10), 1000),  # last month
        ],
    )
    b = budgets(store, {"paid": {"daily_tokens": 100, "monthly_cost": 1.0}})

    assert await used(b) == {"daily_tokens": 40, "monthly_cost": 650}
