"""Three aggregator processes on one queue produce the same projections as one.

The same chaotic stream (duplicates, shuffled order, late progress, parents with children)
goes to two isolated deployments: one aggregator process on one side, three on the other,
one of which is killed (-9) midway and started again. Both must end with the projections
one aggregator reading the log in order gives, and equal to each other.
"""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.adapters.rabbit import Publisher, connect_broker
from taskcore.domain.status import TERMINAL
from taskcore.messages.envelope import EventBatch
from taskcore.messages.topology import declare_topology
from taskcore.testing import wait_for_async
from taskcore.testing.processes import ServiceProcess
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost
from taskcore_aggregator.rebuild import rebuild

from tests.conftest import RABBITMQ_URL
from tests.integration.aggregator.chaos import (
    Scenario,
    chaotic,
    in_messages,
    mixed_scenario,
    publish,
)
from tests.integration.aggregator.harness import comparable, projections, wait_for_projections
from tests.integration.aggregator.test_parents import family, final_events

pytestmark = [
    pytest.mark.e2e,
    # Quarantined: in about 1 of 3 runs on the 2-core CI machine the projections did not
    # all converge within 90 s (no diff recorded yet). Until that is explained, it runs
    # only when asked for: TASKCORE_REPLICA_E2E=1. The single-process chaos and restart
    # tests (tests/integration/aggregator) still run every time.
    pytest.mark.skipif(
        not os.environ.get("TASKCORE_REPLICA_E2E"),
        reason="quarantined (flaky convergence timeout); TASKCORE_REPLICA_E2E=1 runs it",
    ),
]

AGGREGATOR_ENV = {
    "TASKCORE_PARENT_RECOUNT_INTERVAL_SECONDS": "0.1",
    "TASKCORE_WATCHDOG_INTERVAL_SECONDS": "0.5",
    "TASKCORE_WATCHDOG_STALE_SECONDS": "1",
    "TASKCORE_FOLD_BATCH_SIZE": "100",
}


@dataclass
class Deployment:
    rabbitmq_url: str
    store: Store
    env: dict[str, str]


@pytest.fixture
def deployments(mongo_url: str) -> Iterator[list[tuple[str, str]]]:
    """Two isolated (vhost, database) pairs."""
    pairs = [(create_vhost(), f"tc_{uuid.uuid4().hex[:12]}") for _ in range(2)]
    yield pairs
    for vhost, _ in pairs:
        delete_vhost(vhost)


@contextlib.asynccontextmanager
async def deployment(mongo_url: str, vhost: str, database: str) -> AsyncIterator[Deployment]:
    store = Store(connect_mongo(mongo_url), database)
    await store.ensure_indexes()
    url = url_for_vhost(RABBITMQ_URL, vhost)
    env = {"RABBITMQ_URL": url, "MONGO_URL": mongo_url, "MONGO_DB": database, **AGGREGATOR_ENV}
    try:
        yield Deployment(url, store, env)
    finally:
        await store.client.drop_database(database)
        await store.close()


def the_scenario() -> tuple[Scenario, list[str], list[EventBatch]]:
    rng = random.Random(41)
    scenario = mixed_scenario(rng, 300)
    # No replayed children under a parent here: a child's replay can fold before or after
    # its parent closes (on dead-lettered siblings), and the parent's final event then
    # rightly differs between deployments. test_parents covers replayed children.
    parents = [
        family(scenario, rng, ["ok", "dead", "retry_ok", "cancelled"] * 6)[0].task_id,
        family(scenario, rng, ["ok"] * 30, policy="threshold", threshold=0.3)[0].task_id,
        family(scenario, rng, ["ok"] * 10 + ["failed_child"], policy="fail_fast")[0].task_id,
    ]
    messages = in_messages(chaotic(scenario.events, rng, duplicates=0.3), rng)
    return scenario, parents, messages


async def settle(
    d: Deployment,
    scenario: Scenario,
    parents: list[str],
    messages: list[EventBatch],
    aggregators: list[ServiceProcess],
) -> None:
    """Publish the stream; with several aggregators, kill one midway and start it again."""
    connection = await connect_broker(d.rabbitmq_url, name="test-producer")
    try:
        await declare_topology(await connection.channel())
        publisher = await Publisher.open(connection)
        await publish(publisher, messages)
        if len(aggregators) > 1:

            async def some_folded() -> bool:
                return await d.store.events.count_documents({}) > len(scenario.events) // 5

            await wait_for_async(some_folded, timeout=60, interval=0.05, message="some folded")
            aggregators[0].kill()
            # mid-stream: the killed replica's unacked messages go to the others
            assert await d.store.events.count_documents({}) < len(scenario.events)
            aggregators[0].start()
        expected = {t: s for t, s in scenario.expected().items() if t not in parents}
        await wait_for_projections(d.store, expected, within=90)

        async def parents_closed() -> bool:
            terminal = [s.value for s in TERMINAL]
            query = {"_id": {"$in": parents}, "status": {"$in": terminal}}
            return await d.store.tasks.count_documents(query) == len(parents)

        await wait_for_async(parents_closed, timeout=60, interval=0.2, message="parents closed")
    finally:
        await connection.close()


def parent_view(state: dict[str, object]) -> dict[str, object]:
    # A parent's final event is made by the aggregator at closing time: its time and
    # reserved sequence differ between deployments, its content does not.
    return {k: v for k, v in state.items() if k not in ("finished_at", "updated_at", "version")}


async def test_three_aggregator_replicas_produce_the_projections_of_one(
    mongo_url: str, deployments: list[tuple[str, str]], tmp_path: Path
) -> None:
    scenario, parents, messages = the_scenario()
    results = []
    for (vhost, database), replicas in zip(deployments, (1, 3), strict=True):
        async with deployment(mongo_url, vhost, database) as d:
            await scenario.insert(d.store)
            aggregators = [ServiceProcess("aggregator", d.env, tmp_path) for _ in range(replicas)]
            for p in aggregators:
                p.start(wait_ready=False)
            try:
                for p in aggregators:
                    p.wait_ready()
                await settle(d, scenario, parents, messages, aggregators)
            finally:
                for p in aggregators:
                    p.stop()
            assert sum(p.starts for p in aggregators) == replicas + (replicas > 1)

            # Counters follow the children's last transitions (debounced): let them settle.
            async def rebuilds_the_same() -> bool:
                return (await rebuild(d.store, check=True)).clean

            await wait_for_async(rebuilds_the_same, timeout=30, message="rebuild equals live")
            live = await projections(d.store)
            for parent_id in parents:  # each parent closed exactly once
                assert len(await final_events(d.store, parent_id)) == 1
            results.append(live)
    one, three = results
    assert one.keys() == three.keys()
    for task_id in one:
        a, b = comparable(one[task_id]), comparable(three[task_id])
        if task_id in parents:
            a, b = parent_view(a), parent_view(b)
        assert a == b, task_id
        assert one[task_id].subtasks == three[task_id].subtasks
