"""Dead letters end to end: the four services as processes over the real broker and store.

Real failures come from the real executor; unreadable messages are published straight to
``tasks.paid.queue``. The helpers here are shared by the other ``test_dead_letters_*``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.adapters.rabbit import Publisher, connect_broker, message
from taskcore.messages.topology import task_queue_name
from taskcore.submission import NewTask, submit_tasks
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import ADMIN_KEY, API_KEYS, OTHER_KEY, USER_KEY

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
USER = {"Authorization": f"Bearer {USER_KEY}"}
# Short leases and a quick sweep, so crash recovery happens within the tests' deadlines.
DLQ_ENV = {
    "TASKCORE_DLQ_REPLAY_LIMIT": "2",
    "TASKCORE_DLQ_JOB_LEASE_SECONDS": "2",
    "TASKCORE_DLQ_REPLAY_LEASE_SECONDS": "2",
    "TASKCORE_DLQ_SWEEP_INTERVAL_SECONDS": "0.2",
}


@pytest.fixture
def stack_env(stack_env: dict[str, str]) -> dict[str, str]:
    """For the other dead-letter modules, which start their own stacks."""
    return {**stack_env, **DLQ_ENV}


@pytest.fixture(scope="module")
def module_db(mongo_url: str) -> Iterator[str]:
    name = f"tc_{uuid.uuid4().hex[:12]}"
    yield name
    with MongoClient(mongo_url) as client:
        client.drop_database(name)


@pytest.fixture(scope="module")
def module_vhost() -> Iterator[str]:
    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture(scope="module")
def module_stack(
    module_vhost: str, module_db: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One stack for this module's tests (each works on its own tasks): starting the four
    services is most of an end-to-end test's time on a loaded machine."""
    env = {
        "RABBITMQ_URL": url_for_vhost(RABBITMQ_URL, module_vhost),
        "MONGO_URL": mongo_url,
        "MONGO_DB": module_db,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
        **DLQ_ENV,
    }
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("dead-letters")).start()
    try:
        yield stack
    finally:
        stack.stop()
        print(stack.logs())


@pytest.fixture(scope="module")
async def module_store(mongo_url: str, module_db: str) -> AsyncIterator[Store]:
    store = Store(connect_mongo(mongo_url), module_db)
    yield store
    await store.close()


@pytest.fixture(scope="module")
async def publisher(module_vhost: str) -> AsyncIterator[Publisher]:
    url = url_for_vhost(RABBITMQ_URL, module_vhost)
    connection = await connect_broker(url, name="dead-letter-e2e")
    yield await Publisher.open(connection)
    await connection.close()


# ---- steps ---------------------------------------------------------------------------


def submit(stack: Stack, task_type: str, parameters: dict[str, Any], **extra: Any) -> str:
    response = httpx.post(
        f"{stack.api.url}/v1/tasks",
        headers=USER,
        json={"task_type": task_type, "parameters": parameters, **extra},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def task(stack: Stack, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api.url}/v1/tasks/{task_id}", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(stack: Stack, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = task(stack, task_id)
        return body if body["status"] == status else None

    return wait_for(reached, timeout=timeout, interval=0.1, message=f"{task_id} {status}")


def event_types(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.api.url}/v1/tasks/{task_id}/events",
        headers=ADMIN,
        params={"limit": 1000},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def dead_letters(stack: Stack, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.api.url}/v1/dead-letters", headers=ADMIN, params=params, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_dead_letter(stack: Stack, timeout: float = 20, **params: Any) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        items = dead_letters(stack, **params)["items"]
        return items[0] if items else None

    return wait_for(found, timeout=timeout, interval=0.1, message=f"a dead letter {params}")


def detail(stack: Stack, letter_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api.url}/v1/dead-letters/{letter_id}", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def dead_task(stack: Stack, times: int = 1) -> tuple[str, dict[str, Any]]:
    """A task the executor dead-letters at once, and its parked dead letter."""
    task_id = submit(stack, "diag.fail", {"times": times, "retryable": False})
    wait_status(stack, task_id, "DEAD_LETTER")
    return task_id, wait_dead_letter(stack, task_id=task_id, state="pending")


def replay(stack: Stack, letter_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.api.url}/v1/dead-letters/{letter_id}/replay",
        headers=ADMIN,
        json=body or {},
        timeout=10,
    )


# ---- tests ---------------------------------------------------------------------------


async def test_every_reason_produces_an_inspectable_record(
    module_stack: Stack, module_store: Store, publisher: Publisher
) -> None:
    stack, store = module_stack, module_store
    started = datetime.now(UTC) - timedelta(seconds=1)
    # Given tasks that die each way the executor knows
    non_retryable = submit(stack, "diag.fail", {"times": 1, "retryable": False})
    exhausted = submit(stack, "diag.fail", {"times": 5, "retryable": True}, max_attempts=2)
    # a producer whose registry knows types (and accepts parameters) the executors do not
    unknown_type, bad_params = (
        NewTask("alice", "tests.unregistered", {}),
        NewTask("alice", "diag.sleep", {"seconds": "soon"}),
    )
    await submit_tasks(store, publisher, [unknown_type, bad_params])
    # and messages no executor can act on, published straight to the task queue
    await publisher.publish(
        "", task_queue_name("paid"), message(b"not a task", message_id="junk-1")
    )
    orphan = {"task_id": "f" * 32, "task_type": "diag.noop", "user_id": "alice", "dispatch": 1}
    await publisher.publish(
        "",
        task_queue_name("paid"),
        message(
            json.dumps(orphan).encode(),
            headers={"x-task-id": "f" * 32, "x-task-type": "diag.noop", "x-retry-count": 0,
                     "x-dispatch": 1},
            message_id="orphan-1",
        ),
    )  # fmt: skip

    # then each becomes a record with the right reason, error and task
    expected = {
        "non_retryable": (non_retryable, "NonRetryableError"),
        "attempts_exhausted": (exhausted, "RetryableError"),
        "unknown_type": (unknown_type.task_id, "UnknownTaskType"),
        "invalid_parameters": (bad_params.task_id, "ValidationError"),
        "malformed": (None, None),
        "unknown_task": (None, None),
    }
    for reason, (task_id, error_type) in expected.items():
        letter = wait_dead_letter(stack, reason=reason)
        assert letter["dead_lettered_at"] >= started.isoformat()[:19]
        assert letter["error"]["message"]
        if task_id is not None:
            assert letter["task_id"] == task_id
            assert letter["id"] == f"{task_id}:{letter['dispatch']}"
            assert letter["error"]["type"] == error_type
            assert letter["body"]["task_id"] == task_id
            assert letter["headers"]["x-task-id"] == task_id
            full = detail(stack, letter["id"])
            assert full["task"]["status"] == "DEAD_LETTER"
            assert full["death_history"][0]["reason"] == reason
    tracebacks = {
        r: detail(stack, wait_dead_letter(stack, reason=r)["id"])["error"]["traceback"]
        for r in ("non_retryable", "attempts_exhausted")
    }
    assert all("Traceback (most recent call last)" in tb for tb in tracebacks.values())
    exhausted_task = task(stack, exhausted)
    assert (exhausted_task["status"], exhausted_task["attempts"]) == ("DEAD_LETTER", 2)
    junk = detail(stack, "junk-1")
    assert (junk["reason"], junk["body"], junk["task_id"]) == ("malformed", "not a task", None)
    assert junk["original_destination"] == {"exchange": "", "routing_key": "tasks.paid.queue"}

    # and the list filters and pages through them
    mine = {"since": started.isoformat()}
    assert {i["reason"] for i in dead_letters(stack, task_type="diag.fail", **mine)["items"]} >= {
        "non_retryable",
        "attempts_exhausted",
    }
    assert [i["id"] for i in dead_letters(stack, reason="unknown_type", **mine)["items"]] == [
        f"{unknown_type.task_id}:1"
    ]
    assert [
        i["task_id"] for i in dead_letters(stack, error_contains="ATTEMPT 2 FAILS", **mine)["items"]
    ] == [exhausted]
    assert dead_letters(stack, task_id=exhausted, until=started.isoformat())["items"] == []
    everything = [i["id"] for i in dead_letters(stack, limit=200, **mine)["items"]]
    assert len(everything) >= 6
    paged: list[str] = []
    cursor: str | None = None
    while True:
        page = dead_letters(stack, limit=4, **mine, **({"cursor": cursor} if cursor else {}))
        paged += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == everything  # newest first, each once


async def test_replaying_over_http_completes_the_task_once_and_edits_are_validated(
    module_stack: Stack, module_store: Store, publisher: Publisher
) -> None:
    stack, store = module_stack, module_store
    # Given a task that failed for good on its first attempt
    task_id, letter = dead_task(stack)
    # When an admin replays it, then it is replayed, and replaying again changes nothing
    first = replay(stack, letter["id"])
    assert first.status_code == 202, first.text
    assert first.json()["outcome"] == "replayed"
    again = replay(stack, letter["id"])
    assert again.status_code == 200
    assert again.json()["outcome"] == "already_replayed"
    # and the task runs again with a fresh budget and completes (diag.fail counts attempts
    # over the task's whole life)
    done = wait_status(stack, task_id, "COMPLETED")
    assert (done["attempts"], done["retry_count"]) == (2, 0)
    log = event_types(stack, task_id)
    replayed = [e for e in log if e["type"] == "task.replayed"]
    assert len(replayed) == 1
    assert replayed[0]["data"]["dead_letter_id"] == letter["id"]
    assert [e["type"] for e in log].count("task.started") == 2
    assert [e["type"] for e in log][-4:] == [
        "task.dead_lettered",
        "task.replayed",  # DEAD_LETTER -> QUEUED, the only way out of a terminal status
        "task.started",
        "task.completed",
    ]
    shown = detail(stack, letter["id"])
    assert shown["state"] == "replayed"
    assert shown["replayed_at"] is not None

    # Given a task whose parameters no executor accepts
    bad = NewTask("alice", "diag.sleep", {"seconds": "soon"})
    await submit_tasks(store, publisher, [bad])
    broken = wait_dead_letter(stack, task_id=bad.task_id)
    # edits are validated like a submission, and a valid edit rescues it
    refused = replay(stack, broken["id"], {"parameters": {"seconds": -1}})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "parameters.seconds"
    assert replay(stack, broken["id"], {"parameters": {"seconds": 0}}).status_code == 202
    rescued = wait_status(stack, bad.task_id, "COMPLETED")
    assert rescued["parameters"] == {"seconds": 0.0}


def test_a_task_replayed_into_the_same_failure_comes_back_linked_until_the_limit(
    module_stack: Stack,
) -> None:
    stack = module_stack
    # Given a task that fails for good on every attempt (the replay limit here is 2)
    task_id, first = dead_task(stack, times=100)
    letters = [first]
    for _ in range(2):
        assert replay(stack, letters[-1]["id"]).status_code == 202
        # the replayed one is no longer pending: the pending one is the next death
        letters.append(wait_dead_letter(stack, task_id=task_id, state="pending"))
    # then each death after a replay is a new dead letter linked to the one replayed
    assert [x["id"] for x in letters] == [f"{task_id}:{n}" for n in (1, 2, 3)]
    assert [(x["replay_of"], x["generation"]) for x in letters] == [
        (None, 0),
        (letters[0]["id"], 1),
        (letters[1]["id"], 2),
    ]
    # and the limit stops a third replay
    refused = replay(stack, letters[-1]["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "replay_limit"
    assert task(stack, task_id)["status"] == "DEAD_LETTER"


def test_discarding_keeps_the_record_and_records_an_event(module_stack: Stack) -> None:
    stack = module_stack
    task_id, letter = dead_task(stack)
    url = f"{stack.api.url}/v1/dead-letters/{letter['id']}"
    response = httpx.delete(url, headers=ADMIN, params={"note": "bad input"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "discarded"
    assert httpx.delete(url, headers=ADMIN, timeout=10).json()["outcome"] == "already_discarded"
    assert dead_letters(stack, task_id=task_id)["items"] == []  # hidden from the default list
    kept = dead_letters(stack, task_id=task_id, state="discarded")["items"]
    assert [(k["id"], k["discard"]["note"]) for k in kept] == [(letter["id"], "bad input")]
    assert replay(stack, letter["id"]).status_code == 409

    def discarded_event() -> list[dict[str, Any]]:
        return [e for e in event_types(stack, task_id) if e["type"] == "task.discarded"]

    [event] = wait_for(discarded_event, timeout=10, message="the task.discarded event")
    assert event["data"]["dead_letter_id"] == letter["id"]
    assert task(stack, task_id)["status"] == "DEAD_LETTER"


def test_a_user_gets_403_on_every_dead_letter_route_before_the_body_is_read(
    module_stack: Stack,
) -> None:
    stack = module_stack
    base = f"{stack.api.url}/v1/dead-letters"
    routes = [
        ("GET", base, None),
        ("GET", f"{base}?limit=not-a-number", None),
        ("GET", f"{base}/x:1", None),
        ("POST", f"{base}/x:1/replay", b'{"parameters": '),
        ("POST", f"{base}/x:1/replay", b'{"unexpected": 1}'),
        ("POST", f"{base}/replay", b"not json"),
        ("POST", f"{base}/replay", b'{"filter": {}}'),
        ("DELETE", f"{base}/x:1", None),
        ("GET", f"{base}/replay-jobs/j", None),
        ("POST", f"{base}/replay-jobs/j/resume", None),
    ]
    for key in (USER_KEY, OTHER_KEY):
        for method, url, body in routes:
            response = httpx.request(
                method, url, content=body, timeout=10,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )  # fmt: skip
            assert response.status_code == 403, (method, url, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    for method, url, body in routes:
        assert httpx.request(method, url, content=body, timeout=10).status_code == 401
    # while an admin gets past the check to the body
    response = httpx.post(f"{base}/replay", headers=ADMIN, content=b"not json", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    assert httpx.get(f"{base}/x:1", headers=ADMIN, timeout=10).status_code == 404
