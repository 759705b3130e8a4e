"""The benchmark baselines run end to end on the real broker and store, with tiny counts.

Only sanity is asserted here (every message arrives, figures are positive and ordered, and
nothing is left behind); the figures themselves are what ``bench/baselines_cli.py`` is for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmark scripts import the baselines as `bench.baselines`, from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.baselines import (
    celery_paced_latency,
    celery_with_mongo_backend,
    celery_without_backend,
    confirmed_publish_rate,
    consume_rate,
    paced_latency,
    publish_consume_rate,
)

BASE_RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
N = 200


def queues_in(vhost: str) -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in listed.stdout.splitlines()[1:] if line.strip()]


def assert_ordered_latencies(figures: dict[str, Any]) -> None:
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["max_ms"] < 30_000


async def test_confirmed_publish_rate_is_positive_and_leaves_no_queue(
    rabbitmq_url: str, vhost: str
) -> None:
    figures = await confirmed_publish_rate(rabbitmq_url, N)

    assert figures["n"] == N
    assert 0 < figures["msgs_per_s"] < 1_000_000
    assert queues_in(vhost) == []


async def test_publish_consume_rate_acks_every_message_and_measures_latency(
    rabbitmq_url: str,
) -> None:
    figures = await publish_consume_rate(rabbitmq_url, N, prefetch=100)

    assert figures["n"] == N
    assert 0 < figures["msgs_per_s"] < 1_000_000
    assert_ordered_latencies(figures)


async def test_paced_latency_publishes_the_planned_count(rabbitmq_url: str) -> None:
    figures = await paced_latency(rabbitmq_url, 500, 0.4)

    assert figures["n"] == N
    assert figures["target_msgs_per_s"] == 500
    assert_ordered_latencies(figures)


async def test_consume_rate_drains_a_prefilled_queue(rabbitmq_url: str, vhost: str) -> None:
    figures = await consume_rate(rabbitmq_url, N, prefetch=100)

    assert figures["n"] == N
    assert 0 < figures["msgs_per_s"] < 1_000_000
    assert queues_in(vhost) == []


@pytest.mark.slow  # a real worker process starts each time: 2-5 s
def test_celery_with_mongo_backend_stores_every_result(mongo_url: str) -> None:
    figures = celery_with_mongo_backend(BASE_RABBITMQ_URL, N, mongo_url)

    assert figures["n"] == N
    assert 0 < figures["tasks_per_s"] < 1_000_000
    assert figures["submit_per_s"] > 0
    assert_ordered_latencies(figures)


@pytest.mark.slow  # a real worker process starts each time: 2-5 s
def test_celery_paced_latency_stores_every_result_on_schedule(mongo_url: str) -> None:
    figures = celery_paced_latency(BASE_RABBITMQ_URL, 100, 1.0, mongo_url)

    assert figures["n"] == 100
    assert figures["target_tasks_per_s"] == 100
    # date_done is stored to the millisecond (truncated), so a fast task may read up to
    # 1 ms below its true latency, even slightly negative.
    assert -1 <= figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"] < 30_000


@pytest.mark.slow  # a real worker process starts each time: 2-5 s
def test_celery_without_backend_runs_every_task() -> None:
    figures = celery_without_backend(BASE_RABBITMQ_URL, N)

    assert figures["n"] == N
    assert 0 < figures["tasks_per_s"] < 1_000_000


@pytest.mark.parametrize("n", [0, -1])
async def test_rates_refuse_nothing_to_measure_instead_of_waiting(n: int) -> None:
    with pytest.raises(ValueError, match="n must be positive"):
        await publish_consume_rate(BASE_RABBITMQ_URL, n)
    with pytest.raises(ValueError, match="seconds must be positive"):
        await paced_latency(BASE_RABBITMQ_URL, 1000, n)
