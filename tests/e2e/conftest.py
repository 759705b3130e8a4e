"""End-to-end fixtures: the four services as real processes on a fresh vhost and database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

from tests.conftest import RABBITMQ_URL

USER_KEY = "user-key-alice"
OTHER_KEY = "user-key-bob"
ADMIN_KEY = "admin-key"
API_KEYS = {
    USER_KEY: {"user_id": "alice", "role": "user", "tier": "paid"},
    OTHER_KEY: {"user_id": "bob", "role": "user", "tier": "free"},
    ADMIN_KEY: {"user_id": "root", "role": "admin", "tier": "paid"},
}


@pytest.fixture
def stack_env(rabbitmq_url: str, mongo_url: str, mongo_db_name: str) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "MONGO_URL": mongo_url,
        "MONGO_DB": mongo_db_name,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
    }


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path, store: object) -> Iterator[Stack]:
    s = Stack(env=stack_env, log_dir=tmp_path).start()
    try:
        yield s
    finally:
        s.stop()
        print(s.logs())


@pytest.fixture(scope="module")
def module_stack(
    request: pytest.FixtureRequest, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One stack shared by a module's tests, on its own vhost and database (tests keep to
    their own tasks). A module may set ``STACK_ENV`` (a dict) to add or override settings,
    and ``STACK_EXECUTORS`` (an int)."""
    vhost = create_vhost()
    database = f"tc_{uuid.uuid4().hex[:12]}"
    env = {
        "RABBITMQ_URL": url_for_vhost(RABBITMQ_URL, vhost),
        "MONGO_URL": mongo_url,
        "MONGO_DB": database,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
        **getattr(request.module, "STACK_ENV", {}),
    }
    s = Stack(env=env, log_dir=tmp_path_factory.mktemp("stack"))
    try:
        s.start(executors=getattr(request.module, "STACK_EXECUTORS", 1))
        yield s
    finally:
        s.stop()
        print(s.logs())
        client: MongoClient[dict[str, Any]]
        with MongoClient(mongo_url) as client:
            client.drop_database(database)
        delete_vhost(vhost)
