"""The API in-process over real HTTP (uvicorn on a free port), on the real broker and the
real store.

``api`` is shared by a module's tests (its own vhost and database; tests use fresh tasks
and users' own data, so they do not see each other); ``start_api`` starts a private one
with settings of the test's choosing (quotas, say) on the test's own vhost and database.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.settings import Settings
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

from tests.conftest import RABBITMQ_URL
from tests.integration.api.support import RunningApi, StartApi, running_api


@pytest.fixture
async def start_api(settings: Settings) -> AsyncIterator[StartApi]:
    """Start a private API on the test's vhost and database, with setting overrides."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> RunningApi:
            return await stack.enter_async_context(
                running_api(settings.model_copy(update=overrides))
            )

        yield start


@pytest.fixture(scope="module")
def module_settings(mongo_url: str) -> Iterator[Settings]:
    vhost = create_vhost()
    yield Settings(
        RABBITMQ_URL=url_for_vhost(RABBITMQ_URL, vhost),
        MONGO_URL=mongo_url,
        MONGO_DB=f"tc_{uuid.uuid4().hex[:12]}",
        lease_seconds=3.0,
        # No aggregator folds these tasks, so the relay would re-send every outbox entry:
        # out of the way here (the e2e fault test covers it).
        relay_after_seconds=600.0,
    )
    delete_vhost(vhost)


@pytest.fixture(scope="module")
async def api_store(module_settings: Settings) -> AsyncIterator[Store]:
    """The store of the module's shared ``api`` (dropped after the module)."""
    assert module_settings.mongo_url is not None
    store = Store(connect_mongo(module_settings.mongo_url), module_settings.mongo_db)
    yield store
    await store.client.drop_database(module_settings.mongo_db)
    await store.close()


@pytest.fixture(scope="module")
async def api(module_settings: Settings, api_store: Store) -> AsyncIterator[RunningApi]:
    async with running_api(module_settings) as running:
        yield running
