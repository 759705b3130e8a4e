"""Fault-injection tests: ordered last in the session, because one of them restarts the
shared RabbitMQ (every vhost's connections drop while it is down)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.testing.broker_control import ensure_broker_running
from taskcore.testing.durable_standin import DurableStandin

from tests.conftest import RABBITMQ_URL
from tests.faults.harness import SCALE, FaultRun, fault_run
from tests.faults.workload import Workload


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A stable sort: the session's other tests keep their order, the faults go after them.
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


@pytest.fixture(autouse=True)
def broker_running_after() -> Iterator[None]:
    """Whatever happened in a fault test, the shared broker is up after it."""
    yield
    ensure_broker_running(RABBITMQ_URL)


@pytest.fixture
async def run(
    rabbitmq_url: str, vhost: str, mongo_url: str, store: Store, tmp_path: Path
) -> AsyncIterator[FaultRun]:
    """A fault run over the session's store, with the standard mixed workload."""
    async with fault_run(
        rabbitmq_url=rabbitmq_url,
        vhost=vhost,
        mongo_url=mongo_url,
        store=store,
        log_dir=tmp_path,
        workload=Workload.mixed(scale=SCALE),
    ) as r:
        yield r


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[DurableStandin]:
    """A stand-in of the test's own that keeps its data in files, so it can be restarted
    (the session's keeps its data in memory, and others use it)."""
    s = DurableStandin(tmp_path / "nx").start()
    yield s
    s.stop()


@pytest.fixture
async def own_store(standin: DurableStandin) -> AsyncIterator[Store]:
    store = Store(connect_mongo(standin.url), f"tc_{uuid.uuid4().hex[:12]}")
    await store.ensure_indexes()
    yield store
    await store.close()


@pytest.fixture
async def run_on_own_store(
    rabbitmq_url: str, vhost: str, standin: DurableStandin, own_store: Store, tmp_path: Path
) -> AsyncIterator[FaultRun]:
    """A fault run over a store this test may restart."""
    async with fault_run(
        rabbitmq_url=rabbitmq_url,
        vhost=vhost,
        mongo_url=standin.url,
        store=own_store,
        log_dir=tmp_path,
        workload=Workload.mixed(scale=SCALE),
    ) as r:
        yield r
