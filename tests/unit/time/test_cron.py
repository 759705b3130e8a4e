"""Cron expressions in IANA zones, daylight saving included, and what a due schedule does."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from taskcore.scheduling.cron import Cron, InvalidSchedule
from taskcore.scheduling.plan import CatchUp, plan_firing, resume_from

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int, tz: ZoneInfo | None = None) -> datetime:
    return datetime(*args, tzinfo=tz or UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "timezone", "field"),
    [
        ("61 * * * *", "UTC", "cron"),
        ("* * * *", "UTC", "cron"),
        ("* * * * * * *", "UTC", "cron"),
        ("0 0 31 2 *", "UTC", "cron"),
        ("every day", "UTC", "cron"),
        ("* * * * *", "Mars/Olympus_Mons", "timezone"),
        ("* * * * *", "../../etc/passwd", "timezone"),
        ("* * * * *", "", "timezone"),
    ],
)
def test_an_unusable_expression_or_zone_is_refused_naming_which(
    expression: str, timezone: str, field: str
) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        Cron.parse(expression, timezone)
    assert refused.value.field == field


def test_six_fields_put_seconds_first() -> None:
    cron = Cron.parse("*/3 * * * * *")
    assert cron.next_after(at(2030, 1, 1, 0, 0, 3)) == at(2030, 1, 1, 0, 0, 6)
    assert cron.latest_until(at(2030, 1, 1, 0, 0, 3)) == at(2030, 1, 1, 0, 0, 3)
    assert cron.latest_until(at(2030, 1, 1, 0, 0, 5)) == at(2030, 1, 1, 0, 0, 3)


def test_a_time_zone_moves_the_due_times() -> None:
    cron = Cron.parse("0 9 * * *", "Europe/Berlin")
    assert cron.next_after(at(2030, 1, 1)) == at(2030, 1, 1, 8)  # 09:00 CET
    assert cron.next_after(at(2030, 7, 1)) == at(2030, 7, 1, 7)  # 09:00 CEST


def test_a_fixed_time_in_the_hour_skipped_in_spring_runs_once_right_after_it() -> None:
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")  # 2026-03-29: 02:00 -> 03:00
    first = cron.next_after(at(2026, 3, 28, 12))
    assert first is not None
    assert first.astimezone(BERLIN) == at(2026, 3, 29, 3, 0, tz=BERLIN)
    after = cron.next_after(first)
    assert after is not None
    assert after.astimezone(BERLIN) == at(2026, 3, 30, 2, 30, tz=BERLIN)


def test_a_fixed_time_in_the_hour_repeated_in_autumn_runs_once() -> None:
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")  # 2026-10-25: 03:00 -> 02:00
    first = cron.next_after(at(2026, 10, 24, 12))
    assert first is not None
    second = cron.next_after(first)
    assert second is not None
    assert second - first == timedelta(hours=25)  # the next day's, not the repeat


def test_an_interval_follows_real_time_through_the_repeated_hour() -> None:
    cron = Cron.parse("*/30 * * * *", "Europe/Berlin")
    times, t = [], at(2026, 10, 24, 23)  # 01:00 CEST
    for _ in range(6):
        t = cron.next_after(t) or t
        times.append(t)
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(times))


GRACE = 60.0


def test_a_due_time_found_on_time_runs() -> None:
    cron = Cron.parse("*/3 * * * * *")
    due = at(2030, 1, 1, 0, 0, 3)
    plan = plan_firing(cron, due, due + timedelta(milliseconds=400), CatchUp.NONE, GRACE)
    assert (plan.due, plan.next_run) == (due, at(2030, 1, 1, 0, 0, 6))


def test_after_an_outage_catch_up_none_skips_to_the_next_due_time() -> None:
    cron = Cron.parse("*/3 * * * * *")
    plan = plan_firing(cron, at(2030, 1, 1, 0, 0, 3), at(2030, 1, 1, 0, 0, 20), CatchUp.NONE, 60)
    assert plan.due is None
    assert plan.next_run == at(2030, 1, 1, 0, 0, 21)


def test_after_an_outage_catch_up_one_runs_the_last_missed_time_once() -> None:
    cron = Cron.parse("*/3 * * * * *")
    plan = plan_firing(cron, at(2030, 1, 1, 0, 0, 3), at(2030, 1, 1, 0, 0, 20), CatchUp.ONE, 60)
    assert plan.due == at(2030, 1, 1, 0, 0, 18)
    assert plan.next_run == at(2030, 1, 1, 0, 0, 21)


def test_a_run_later_than_half_its_period_is_missed_whatever_the_grace() -> None:
    cron = Cron.parse("*/4 * * * * *")
    due = at(2030, 1, 1, 0, 0, 4)
    assert plan_firing(cron, due, due + timedelta(seconds=1.9), CatchUp.NONE, 60).due == due
    assert plan_firing(cron, due, due + timedelta(seconds=2.1), CatchUp.NONE, 60).due is None


def test_resuming_catches_up_once_or_goes_on_from_the_next_time() -> None:
    cron = Cron.parse("0 * * * *")
    missed, now = at(2030, 1, 1, 3), at(2030, 1, 1, 5, 30)
    assert resume_from(cron, missed, now, CatchUp.ONE) == missed
    assert resume_from(cron, missed, now, CatchUp.NONE) == at(2030, 1, 1, 6)
