"""Shared fixtures: a real RabbitMQ (a fresh vhost per test) and a MongoDB-protocol store.

The store is, in order of preference: ``MONGO_URL`` when set; a MongoDB testcontainer
when a Docker engine answers; otherwise the nx-27017 stand-in started for the session.
Each test gets its own database, so tests never see each other's documents.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.adapters.rabbit import Publisher, connect_broker
from taskcore.messages.topology import declare_topology
from taskcore.settings import Settings
from taskcore.standin import MongoStandin
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The tests use the diag.* task types throughout; in-process services read this, and the
# services the tests start as processes inherit it. (tests/unit/test_registry_diag.py
# checks that they are off without it.)
os.environ.setdefault("TASKCORE_ENABLE_DIAG", "1")


@functools.cache
def _docker_answers() -> bool:
    """Whether a Docker engine answers on its socket (checked without the docker SDK,
    which leaks a socket when no engine is there)."""
    if os.environ.get("TASKCORE_TEST_NO_DOCKER"):
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine: let testcontainers try it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in sock.recv(1024)
        except OSError:
            return False


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoStandin | None]:
    """The running stand-in when the tests started one, else None."""
    if os.environ.get("MONGO_URL"):
        yield None
        return
    if _docker_answers():  # pragma: no cover - no Docker engine on our CI machines
        from testcontainers.mongodb import MongoDbContainer

        with MongoDbContainer("mongo:7") as container:
            os.environ["MONGO_URL"] = container.get_connection_url()
            yield None
        return
    standin = MongoStandin(workdir=Path(tmp_path_factory.mktemp("nx")))
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture(scope="session")
def mongo_url(mongo_server: MongoStandin | None) -> str:
    return mongo_server.url if mongo_server else os.environ["MONGO_URL"]


@pytest.fixture
def mongo_db_name() -> str:
    return f"tc_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(mongo_url: str, mongo_db_name: str) -> AsyncIterator[Store]:
    s = Store(connect_mongo(mongo_url), mongo_db_name)
    await s.ensure_indexes()
    yield s
    await s.client.drop_database(mongo_db_name)
    await s.close()


@pytest.fixture
async def is_standin(store: Store) -> bool:
    return await store.is_standin()


@pytest.fixture
def vhost() -> Iterator[str]:
    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture
def rabbitmq_url(vhost: str) -> str:
    return url_for_vhost(RABBITMQ_URL, vhost)


@pytest.fixture
def settings(rabbitmq_url: str, mongo_url: str, mongo_db_name: str) -> Settings:
    return Settings(
        RABBITMQ_URL=rabbitmq_url,
        MONGO_URL=mongo_url,
        MONGO_DB=mongo_db_name,
        lease_seconds=3.0,
        relay_after_seconds=1.0,
        relay_interval_seconds=0.2,
    )


@pytest.fixture
async def connection(rabbitmq_url: str) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection to the test's vhost, with the topology declared."""
    conn = await connect_broker(rabbitmq_url, name="taskcore-tests")
    await declare_topology(await conn.channel())
    yield conn
    await conn.close()


@pytest.fixture
async def publisher(connection: AbstractRobustConnection) -> Publisher:
    return await Publisher.open(connection)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # requires_real_mongo tests skip on the stand-in; decided once the store answers.
    if os.environ.get("MONGO_URL") or _docker_answers():
        return
    skip = pytest.mark.skip(reason="needs real MongoDB semantics; running on nx-27017")
    for item in items:
        if "requires_real_mongo" in item.keywords:
            item.add_marker(skip)
