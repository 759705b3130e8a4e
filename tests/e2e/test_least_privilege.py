"""The four services under the RabbitMQ permissions deploy/README.md prescribes, one user
each (deploy/rabbitmq/permissions.json), after `taskcore topology` declared the topology
as its own user: every path of a task's life works, and a user cannot do what its service
never does."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused
from pymongo import MongoClient
from taskcore.messages.topology import TASKS_EXCHANGE, task_queue_name
from taskcore.testing import wait_for_async
from taskcore.testing.processes import SERVICES, ServiceProcess
from taskcore.testing.rabbit import MANAGEMENT_URL, create_vhost, delete_vhost

from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import ADMIN_KEY, API_KEYS, USER_KEY

pytestmark = pytest.mark.e2e

PERMISSIONS = json.loads(
    (Path(__file__).resolve().parents[2] / "deploy/rabbitmq/permissions.json").read_text()
)
AUTH = {"Authorization": f"Bearer {USER_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
_BROKER = urlsplit(RABBITMQ_URL)


def management(method: str, path: str, body: dict[str, str] | None = None) -> None:
    """The management HTTP API, as the tests' (administrator) broker user."""
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    password = _BROKER.password or "guest"
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, MANAGEMENT_URL, _BROKER.username or "guest", password)
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
    with opener.open(request, timeout=30):
        pass


def url_as(user: str, password: str, vhost: str) -> str:
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{_BROKER.hostname}"
    return urlunsplit(
        ("amqp", f"{netloc}:{_BROKER.port or 5672}", "/" + quote(vhost, safe=""), "", "")
    )


ROLES = ("topology", *SERVICES)


def taskcore(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskcore.cli", command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def service_users() -> Iterator[dict[str, str]]:
    """A vhost, and one broker user per role (the topology step and each service) with
    exactly its permissions there: role -> its RABBITMQ_URL."""
    vhost, run = create_vhost(), uuid.uuid4().hex[:8]
    urls = {}
    try:
        for service in ROLES:
            user, password = f"tc-test-{run}-{service}", uuid.uuid4().hex
            management("PUT", f"users/{quote(user, safe='')}", {"password": password, "tags": ""})
            management(
                "PUT",
                f"permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
                PERMISSIONS[service],
            )
            urls[service] = url_as(user, password, vhost)
        yield urls
    finally:
        for service in ROLES:
            user = f"tc-test-{run}-{service}"
            with contextlib.suppress(OSError):
                management("DELETE", f"users/{quote(user, safe='')}")
        delete_vhost(vhost)


@pytest.fixture(scope="module")
def services(
    service_users: dict[str, str], mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    database = f"tc_{uuid.uuid4().hex[:12]}"
    common = {
        "TASKCORE_DECLARE_TOPOLOGY": "false",
        "MONGO_URL": mongo_url,
        "MONGO_DB": database,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        "TASKCORE_ENABLE_DIAG": "1",
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
    }
    logs = tmp_path_factory.mktemp("least-privilege")
    # A service that only checks the topology refuses to start before it is declared
    early = taskcore("aggregator", {**common, "RABBITMQ_URL": service_users["aggregator"]})
    assert early.returncode == 2, early.stderr
    assert "declare the topology first (`taskcore topology`" in early.stderr
    declared = taskcore("topology", {"RABBITMQ_URL": service_users["topology"]})
    assert declared.returncode == 0, declared.stderr
    running = {
        s: ServiceProcess(s, {**common, "RABBITMQ_URL": service_users[s]}, logs) for s in SERVICES
    }
    try:
        for process in running.values():
            process.start(wait_ready=False)
        for process in running.values():
            process.wait_ready()
        yield running
    finally:
        for process in running.values():
            process.stop()
        for process in running.values():
            print(f"--- {process.service}\n{process.log_tail()}")
        with MongoClient(mongo_url) as client:
            client.drop_database(database)


@pytest.fixture(scope="module")
async def http(services: dict[str, ServiceProcess]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=services["api"].url, headers=AUTH, timeout=10) as c:
        yield c


async def submitted(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def status_becomes(http: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        task: dict[str, Any] = (await http.get(f"/v1/tasks/{task_id}")).json()
        return task if task["status"] == status else None

    return await wait_for_async(reached, timeout=30, message=f"{task_id} {status}")


async def test_a_task_retries_and_completes(http: httpx.AsyncClient) -> None:
    task_id = await submitted(http, {"task_type": "diag.fail", "parameters": {"times": 1}})
    task = await status_becomes(http, task_id, "COMPLETED")
    assert task["attempts"] == 2


async def test_a_fan_out_spawns_its_children_and_closes(http: httpx.AsyncClient) -> None:
    body = {"task_type": "diag.fanout", "parameters": {"count": 3, "child_type": "diag.noop"}}
    task = await status_becomes(http, await submitted(http, body), "COMPLETED")
    assert task["subtasks"]["completed"] == 3


async def test_a_running_task_is_cancelled(http: httpx.AsyncClient) -> None:
    task_id = await submitted(http, {"task_type": "diag.sleep", "parameters": {"seconds": 30}})
    await status_becomes(http, task_id, "RUNNING")
    assert (await http.post(f"/v1/tasks/{task_id}/cancel")).status_code in (200, 202)
    await status_becomes(http, task_id, "CANCELLED")


async def test_a_dead_task_is_parked_and_replayed(http: httpx.AsyncClient) -> None:
    body = {"task_type": "diag.fail", "parameters": {"times": 1, "retryable": False}}
    task_id = await submitted(http, body)
    await status_becomes(http, task_id, "DEAD_LETTER")

    async def parked() -> list[dict[str, Any]] | None:
        items = (await http.get("/v1/dead-letters", headers=ADMIN)).json()["items"]
        return [i for i in items if i["task_id"] == task_id] or None

    [letter] = await wait_for_async(parked, timeout=15, message="the dead letter parked")
    replay = await http.post(f"/v1/dead-letters/{letter['id']}/replay", headers=ADMIN)
    assert replay.status_code in (200, 202), replay.text
    await status_becomes(http, task_id, "COMPLETED")


async def test_no_service_was_refused_anything(services: dict[str, ServiceProcess]) -> None:
    for process in services.values():
        assert "ACCESS_REFUSED" not in process.log_path.read_text(errors="replace"), process.service


async def test_a_user_cannot_do_what_its_service_never_does(
    services: dict[str, ServiceProcess], service_users: dict[str, str]
) -> None:
    # The bridge never dispatches tasks; the aggregator never takes them.
    bridge = await aio_pika.connect(service_users["event-bridge"])
    aggregator = await aio_pika.connect(service_users["aggregator"])
    try:
        channel = await bridge.channel()
        tasks = await channel.get_exchange(TASKS_EXCHANGE, ensure=False)
        with pytest.raises(ChannelAccessRefused):  # confirmed: the refusal is the answer
            await tasks.publish(aio_pika.Message(b"{}"), routing_key="paid")
        channel = await aggregator.channel()
        queue = await channel.get_queue(task_queue_name("paid"), ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await queue.get(fail=False)
    finally:
        await bridge.close()
        await aggregator.close()
