"""The end-to-end benchmark's core on a small count: the four services as processes, the
real broker and store. Only sanity is asserted (every task visibly completes, the counts
are there); the figures themselves are what ``python -m bench.e2e`` is for."""

from __future__ import annotations

from typing import Any

import pytest

from bench.common import running_stack
from bench.e2e import Workload, completion_problems, run_workload

pytestmark = pytest.mark.e2e


def assert_sane(figures: dict[str, Any], n: int) -> None:
    assert completion_problems(figures) == []
    assert figures["n"] == figures["completed_events_received"] == n
    assert figures["projection_completed"] == n
    assert figures["tasks_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    published = figures["per_task"]["taskcore_amqp_messages_published_total"]
    store = figures["per_task"]["taskcore_store_commands_total"]
    # Every task needs at least its dispatch and its completed CloudEvent published, and its
    # claim goes to the store (batched with others'); the exact figures are the benchmark's.
    assert published["api tasks.exchange"] >= 1
    assert published["event-bridge tasks.events.exchange"] >= 1
    assert sum(v for k, v in store.items() if k.startswith("executor ")) > 0
    assert published["total"] > 0
    assert store["total"] > 0
    # submitted, started and completed reach the subscriber for every task
    assert figures["subscriber_msgs_per_task"] >= 3
    assert all(ms > 0 for ms in figures["cpu_ms_per_task"].values())


async def test_every_task_completes_visibly_and_its_cost_is_counted(
    rabbitmq_url: str, mongo_url: str
) -> None:
    # Given the four services on a fresh vhost and database
    with running_stack(rabbitmq_url, mongo_url) as target:
        # when the benchmark submits flat out (in a window), paced, and a parent with children
        flat = await run_workload(
            target, Workload("smoke.flat", 200, batch_size=50, window=100, timeout_s=30)
        )
        paced = await run_workload(
            target, Workload("smoke.paced", 60, batch_size=10, rate=200, timeout_s=30)
        )
        fanout = await run_workload(
            target,
            Workload("smoke.fanout", 1, "diag.fanout", children=50, timeout_s=30),
        )

    # then every task is COMPLETED in the projection and its completed CloudEvent arrived
    assert_sane(flat, 200)
    assert_sane(paced, 60)
    assert paced["mode"] == "paced 200/s"
    assert fanout["n"] == 51
    assert fanout["completed_events_received"] == 51
    assert fanout["projection_completed"] == 51
    assert completion_problems(fanout) == []
