"""The end-to-end benchmark's core on a small count: the four services as processes, the
real broker and store. Only sanity is asserted (every task visibly completes, the counts
are there); the figures themselves are what ``python -m bench.e2e`` is for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.common import StackTarget, fresh_vhost, running_stack
from bench.e2e import (
    Workload,
    completion_problems,
    measure_workflow,
    report,
    run_workload,
    workflow_ratio,
)
from bench.hops import HOPS, format_hops, measure_hops

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def target(mongo_url: str) -> Iterator[StackTarget]:
    """The four services on a fresh vhost and database, shared by this module's tests."""
    with fresh_vhost("bench-smoke") as rabbitmq_url, running_stack(rabbitmq_url, mongo_url) as t:
        yield t


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


async def test_every_task_completes_visibly_and_its_cost_is_counted(target: StackTarget) -> None:
    # Given the four services on a fresh vhost and database,
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


async def test_the_workflow_figure_runs_the_pipeline_both_ways_and_reports_it(
    target: StackTarget,
) -> None:
    # When the benchmark runs the 3-step pipeline with a 30-item for_each, as a workflow
    # and as plain tasks
    figures = await measure_workflow(target, 30)

    # then both ran every step (total got every element's result, in order), were timed,
    # and the report shows steps per second and their ratio
    workflow, plain = figures
    assert workflow["baseline"] == "taskcore.workflow.pipeline"
    assert plain["baseline"] == "taskcore.workflow.plain_tasks"
    for f in figures:
        assert f["problems"] == []
        assert f["steps"] == 32
        assert f["steps_per_s"] == pytest.approx(32 / f["seconds"], rel=0.01)
    assert (workflow["tasks"], workflow["requests"]) == (34, 1)
    assert (plain["tasks"], plain["requests"]) == (32, 5)
    ratio = workflow_ratio(figures)
    [(key, value)] = ratio.items()
    assert value == pytest.approx(workflow["steps_per_s"] / plain["steps_per_s"], abs=0.001)
    text = report({**ENVIRONMENT}, [], ratio, figures)
    assert "a 30-item for_each" in text
    assert f"{workflow['steps_per_s']:,.1f} steps/s" in text
    assert f"{plain['steps_per_s']:,.1f} steps/s" in text
    assert key in text


ENVIRONMENT = {
    "broker": "RabbitMQ",
    "store": "stand-in",
    "cpus": 2,
    "executors": 1,
    "load_average": 0.0,
    "source": "test",
}


async def test_the_per_hop_breakdown_accounts_for_every_hop(target: StackTarget) -> None:
    # When 20 tasks are submitted one POST at a time and followed hop by hop
    hops = await measure_hops(target, n=20, rate=100)

    # then every hop was seen for every task, each takes time, and they add up
    assert set(hops) == set(HOPS)
    assert all(hops[hop]["p50_ms"] >= 0 for hop in HOPS)
    parts = sum(hops[hop]["p50_ms"] for hop in HOPS if hop not in ("total", "http"))
    assert hops["total"]["max_ms"] >= hops["total"]["p50_ms"] > 0
    assert parts > 0
    assert "bridge" in format_hops(hops)
