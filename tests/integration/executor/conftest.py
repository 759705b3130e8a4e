"""Fixtures for the executor's integration tests: a ``System`` per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest
from taskcore.adapters.mongo import Store
from taskcore.messages.topology import declare_topology
from taskcore.settings import Settings

from tests.integration.executor import plugin
from tests.integration.executor.harness import System


@pytest.fixture
async def system(settings: Settings, store: Store) -> AsyncIterator[System]:
    connection = await aio_pika.connect_robust(settings.rabbitmq_url)
    await declare_topology(await connection.channel())
    plugin.STARTED.clear()
    sys_ = System(settings, store, connection)
    await sys_.open()
    try:
        yield sys_
    finally:
        try:
            await sys_.close()
        finally:
            await connection.close()
