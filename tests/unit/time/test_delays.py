"""Where a delayed task waits: a delay queue that fits, else the store; never early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from taskcore.domain.delays import QUEUE_FIT_S, Immediate, ViaQueue, ViaStore, route_delay

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_a_task_due_now_or_in_the_past_is_dispatched_at_once() -> None:
    assert route_delay(None, NOW) == Immediate()
    assert route_delay(NOW, NOW) == Immediate()
    assert route_delay(NOW - timedelta(hours=1), NOW) == Immediate()


@pytest.mark.parametrize("seconds", [1, 2, 5, 10, 30, 60, 300, 1800, 3600])
def test_a_delay_equal_to_a_delay_queue_s_ttl_goes_through_that_queue(seconds: int) -> None:
    assert route_delay(NOW + timedelta(seconds=seconds), NOW) == ViaQueue(seconds)


def test_a_delay_no_queue_fits_waits_in_the_store_until_its_exact_time() -> None:
    due = NOW + timedelta(seconds=7, milliseconds=300)
    assert route_delay(due, NOW) == ViaStore(int(due.timestamp() * 1000))


@given(st.floats(min_value=0.001, max_value=30 * 86400, allow_nan=False))
def test_no_route_ever_starts_a_task_early_or_later_than_the_fit(delay_s: float) -> None:
    due = NOW + timedelta(seconds=delay_s)
    route = route_delay(due, NOW)
    if isinstance(route, ViaQueue):
        late = route.tier_s - (due - NOW).total_seconds()
        assert 0 <= late <= QUEUE_FIT_S + 1e-6
    else:
        assert isinstance(route, ViaStore)
        assert route.due_ms >= due.timestamp() * 1000
