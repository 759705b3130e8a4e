"""Backoff as a pure function: how long a retry waits, and which delay queue it uses."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from taskcore.domain.retry_policy import (
    DELAY_TIERS_S,
    RetryPolicy,
    delay_queue_name,
    delay_tier,
)

EXACT = RetryPolicy(jitter=0.0)


def test_the_first_retry_waits_about_a_second_by_default() -> None:
    assert EXACT.next_delay(0) == 1.0
    assert 0.8 <= RetryPolicy().next_delay(0, random.Random(1)) <= 1.2


def test_delays_grow_by_the_multiplier() -> None:
    delays = [EXACT.next_delay(n) for n in range(6)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_delays_stop_growing_at_the_cap() -> None:
    policy = RetryPolicy(jitter=0.0, max_delay_s=60.0)

    delays = [policy.next_delay(n) for n in range(12)]

    assert all(a <= b for a, b in pairwise(delays))
    assert delays[-1] == 60.0
    assert max(delays) == 60.0


def test_a_huge_retry_count_waits_the_cap_instead_of_overflowing() -> None:
    assert EXACT.next_delay(5000) == EXACT.max_delay_s
    assert RetryPolicy().next_delay(5000, random.Random(3)) <= RetryPolicy().max_delay_s


@settings(max_examples=200, deadline=None)
@given(retry_count=st.integers(0, 40), seed=st.integers(0, 2**32))
def test_jitter_stays_within_its_fraction_and_under_the_cap(retry_count: int, seed: int) -> None:
    policy = RetryPolicy(jitter=0.2, max_delay_s=300.0)
    exact = RetryPolicy(jitter=0.0, max_delay_s=300.0).next_delay(retry_count)

    delay = policy.next_delay(retry_count, random.Random(seed))

    assert exact * 0.8 <= delay <= exact * 1.2
    assert delay <= policy.max_delay_s


def test_jitter_spreads_retries_apart() -> None:
    rng = random.Random(7)

    delays = {RetryPolicy().next_delay(3, rng) for _ in range(20)}

    assert len(delays) > 10


def test_the_same_seed_gives_the_same_delay() -> None:
    policy = RetryPolicy()

    assert policy.next_delay(4, random.Random(42)) == policy.next_delay(4, random.Random(42))


@pytest.mark.parametrize(
    ("max_attempts", "retries_allowed"),
    [(1, 0), (2, 1), (3, 2), (5, 4)],
)
def test_should_retry_allows_max_attempts_minus_one_retries(
    max_attempts: int, retries_allowed: int
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)

    decisions = [policy.should_retry(n) for n in range(max_attempts + 2)]

    assert decisions == [n < retries_allowed for n in range(max_attempts + 2)]


@pytest.mark.parametrize("tier", DELAY_TIERS_S)
def test_a_delay_equal_to_a_tier_uses_that_tier(tier: int) -> None:
    assert delay_tier(float(tier)) == tier


@pytest.mark.parametrize(
    ("delay", "tier"),
    [(0.0, 1), (1.4, 1), (1.6, 2), (4.0, 5), (7.4, 5), (8.0, 10), (50.0, 60), (10**6, 3600)],
)
def test_a_delay_goes_to_the_closest_tier(delay: float, tier: int) -> None:
    assert delay_tier(delay) == tier


def test_a_delay_halfway_between_two_tiers_takes_the_shorter() -> None:
    assert delay_tier(1.5) == 1
    assert delay_tier(45.0) == 30


@settings(max_examples=200, deadline=None)
@given(delay=st.floats(0.0, 10_000.0))
def test_no_tier_is_closer_than_the_one_chosen(delay: float) -> None:
    chosen = delay_tier(delay)

    assert chosen in DELAY_TIERS_S
    assert all(abs(chosen - delay) <= abs(t - delay) for t in DELAY_TIERS_S)


def test_delay_queues_are_named_by_their_ttl() -> None:
    assert delay_queue_name(30) == "tasks.retry.30s"
