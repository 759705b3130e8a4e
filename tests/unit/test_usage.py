"""LLM usage in the domain: prices to exact costs, usage added up per provider, folded
from a task's events; budgets' configuration and windows; the ledger's rows and groups."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from taskcore.domain.events import EventType
from taskcore.domain.evolve import fold
from taskcore.domain.usage import Prices, Usage, UsageRecorded, combined, nanos_of, units_of
from taskcore.usage.budgets import BudgetsConfig, Limit
from taskcore.usage.ledger import MAX_GROUPS, UsageQuery, ledger_row, report_pipeline
from taskcore.usage.windows import Period

from .streams import event, submitted, usage_data


def call(provider: str = "openai", prompt: int = 10, completion: int = 5, cost: int = 7) -> Usage:
    return Usage.of_call(
        UsageRecorded.model_validate(usage_data(provider, prompt, completion, cost))
    )


def test_a_price_per_million_tokens_gives_an_exact_cost_in_nano_units() -> None:
    prices = Prices.model_validate_json('{"input_per_million": 0.15, "output_per_million": 0.6}')

    assert prices.cost_nanos(1_000, 500) == 150_000 + 300_000
    assert prices.cost_nanos(1, 1) == 750  # 0.15 and 0.6 thousandths of a unit per token
    assert Prices().cost_nanos(10**6, 10**6) == 0


def test_amounts_convert_to_nano_units_and_back_exactly() -> None:
    assert nanos_of(2.5) == 2_500_000_000
    assert nanos_of("0.000000001") == 1
    assert units_of(123_456_789) == 0.123456789


def test_prices_refuse_negative_amounts_and_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Prices.model_validate({"input_per_million": -1})
    with pytest.raises(ValidationError):
        Prices.model_validate({"input_per_millions": 1})


def test_usage_adds_up_in_total_and_per_provider() -> None:
    total = call("openai", 10, 5, 7).plus(call("offline", 1, 2, 0)).plus(call("openai", 3, 0, 1))

    assert (total.prompt_tokens, total.completion_tokens, total.calls, total.cost_nanos) == (
        14,
        7,
        3,
        8,
    )
    assert total.by_provider["openai"].calls == 2
    assert total.by_provider["openai"].cost_nanos == 8
    assert total.by_provider["offline"].prompt_tokens == 1


def test_no_usage_combines_to_none_and_some_to_its_sum() -> None:
    assert combined(None, None) is None
    assert combined(None, call()) == call()


def test_a_task_folds_every_call_of_every_attempt_and_ignores_a_malformed_one() -> None:
    events = [
        submitted(),
        event(EventType.STARTED, 2, {"node_id": "a"}),
        event(EventType.USAGE_RECORDED, 3, usage_data("openai", 10, 5, 7)),
        event(EventType.RETRYING, 4, {"retry_count": 1}),
        event(EventType.STARTED, 1002, {"node_id": "b"}),
        event(EventType.USAGE_RECORDED, 1003, {"provider": "openai"}),  # malformed
        event(EventType.USAGE_RECORDED, 1004, usage_data("openai", 20, 4, 9)),
        event(EventType.COMPLETED, 1005, {"result": {}}),
        # An attempt that lost its lease may log a call after the task ended: it was paid.
        event(EventType.USAGE_RECORDED, 2001, usage_data("offline", 1, 1, 0)),
    ]
    task = fold(events)

    assert task is not None
    assert task.usage == call("openai", 10, 5, 7).plus(call("openai", 20, 4, 9)).plus(
        call("offline", 1, 1, 0)
    )
    assert task.status.value == "COMPLETED"


def test_a_users_budget_overrides_their_tiers_limit_by_limit() -> None:
    config = BudgetsConfig.parse(
        json.dumps(
            {
                "free": {"daily_cost": 1.5, "monthly_tokens": 1000},
                "users": {"bob": {"daily_cost": None, "daily_tokens": 50}},
            }
        )
    )

    assert config.limits_for("alice", "free") == (
        Limit("daily", "cost", 1_500_000_000),
        Limit("monthly", "tokens", 1000),
    )
    assert config.limits_for("bob", "free") == (
        Limit("daily", "tokens", 50),
        Limit("monthly", "tokens", 1000),
    )
    assert config.limits_for("alice", "paid") == ()
    assert config.configured
    assert not BudgetsConfig.parse("").configured


def test_a_budget_with_an_unknown_limit_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="daily_costs"):
        BudgetsConfig.parse('{"paid": {"daily_costs": 1}}')


def test_budget_windows_are_the_utc_day_and_month() -> None:
    period = Period.of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))

    assert (period.month, period.day) == ("2026-12", "31")
    assert period.day_ends == datetime(2027, 1, 1, tzinfo=UTC)
    assert period.month_ends == datetime(2027, 1, 1, tzinfo=UTC)
    assert period.month_starts == datetime(2026, 12, 1, tzinfo=UTC)
    assert Limit("daily", "tokens", 5).path(period) == "days.31.tokens"
    assert Limit("monthly", "cost", 5).path(period) == "totals.cost"


def test_a_ledger_row_holds_its_group_values_encoded_so_any_characters_survive() -> None:
    data = {**usage_data("a,b", 3, 4, 5), "team_id": 'team "x", y'}
    row = ledger_row(event(EventType.USAGE_RECORDED, 7, data))

    assert row is not None
    assert row["_id"] == "t-0001:7"
    assert (row["calls"], row["tokens"], row["cost_nanos"]) == (1, 7, 5)
    key = ",".join(row["keys"][name] for name in ("provider", "team", "day"))
    assert json.loads(f"[{key}]") == ["a,b", 'team "x", y', "2026-01-01"]
    assert ledger_row(event(EventType.PROGRESS, 8, {"progress": {}})) is None


def test_a_report_groups_by_the_fields_asked_for_in_that_order() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    [match, group, limit] = report_pipeline(
        UsageQuery(start, end, ["day", "user"], {"user_id": "a"})
    )

    assert match["$match"]["user_id"] == "a"
    assert match["$match"]["at_ms"] == {"$gte": 1_767_225_600_000, "$lt": 1_769_904_000_000}
    assert group["$group"]["_id"] == {"$concat": ["$keys.day", ",", "$keys.user"]}
    assert limit == {"$limit": MAX_GROUPS + 1}  # one past the bound: enough to refuse
