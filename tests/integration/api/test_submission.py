"""Submitting one task: validation, body limits, idempotency keys, tiers, dispatch."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from taskcore.adapters.mongo import Store
from taskcore.messages.envelope import TaskMessage

from tests.integration.api.support import ALICE, BOB, RunningApi, queue_messages, submit


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"task_type": "no.such.type"}, "unknown_task_type", "task_type"),
        (
            {"task_type": "diag.sleep", "parameters": {"seconds": -1}},
            "invalid_parameters",
            "parameters.seconds",
        ),
        (
            {"task_type": "diag.sleep", "parameters": {"seconds": "long"}},
            "invalid_parameters",
            "parameters.seconds",
        ),
        (
            {"task_type": "diag.noop", "parameters": {"surprise": 1}},
            "invalid_parameters",
            "parameters.surprise",
        ),
        (
            {"task_type": "diag.fanout", "parameters": {"count": 10**9}},
            "invalid_parameters",
            "parameters.count",
        ),
        ({"task_type": "diag.noop", "priority": 10}, "validation_failed", "priority"),
        ({"task_type": "diag.noop", "priority": -1}, "validation_failed", "priority"),
        ({"task_type": "diag.noop", "max_attempts": 0}, "validation_failed", "max_attempts"),
        ({"task_type": "diag.noop", "max_attempts": 21}, "validation_failed", "max_attempts"),
        ({"task_type": ""}, "validation_failed", "task_type"),
        ({"parameters": {}}, "validation_failed", "task_type"),
        ({"task_type": "diag.noop", "colour": "red"}, "validation_failed", "colour"),
    ],
)
async def test_invalid_submissions_are_422_naming_the_field(
    api: RunningApi, body: dict[str, object], code: str, field: str
) -> None:
    async with api.client(ALICE) as client:
        response = await client.post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert field in [d["field"] for d in error["details"]]
    assert all(d["reason"] for d in error["details"])


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"task_type": "diag.noop"', "application/json", 400),
        (b"\xff\xfe not utf-8", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b'"diag.noop"', "application/json", 422),
        (b"", "application/json", 422),
        (b"task_type=diag.noop", "application/x-www-form-urlencoded", 422),
    ],
)
async def test_malformed_bodies_are_4xx_in_the_error_shape(
    api: RunningApi, content: bytes, content_type: str, status: int
) -> None:
    async with api.client(ALICE) as client:
        response = await client.post(
            "/v1/tasks", content=content, headers={"content-type": content_type}
        )
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def test_a_body_over_one_mib_is_a_413_whether_declared_or_streamed(api: RunningApi) -> None:
    big = json.dumps({"task_type": "diag.noop", "parameters": {"x": "a" * (1024 * 1024)}})

    async def chunks() -> object:
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024].encode()

    async with api.client(ALICE) as client:
        declared = await client.post(
            "/v1/tasks", content=big, headers={"content-type": "application/json"}
        )
        streamed = await client.post(
            "/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["details"] == {"limit_bytes": 1024 * 1024}


async def test_parameters_are_normalised_and_the_task_is_readable_right_after_the_202(
    api: RunningApi,
) -> None:
    async with api.client(ALICE) as client:
        task = await submit(client, "diag.sleep", priority=7, max_attempts=4)
        again = await client.get(f"/v1/tasks/{task['id']}")
    assert again.status_code == 200
    assert again.json() == task
    assert task["status"] == "QUEUED"
    assert task["parameters"] == {"seconds": 1.0}  # the type's default, filled in
    assert task["priority"] == 7
    assert task["max_attempts"] == 4


async def test_the_tier_travels_with_the_task_to_its_tier_queue(api: RunningApi) -> None:
    async with api.client(BOB) as bob, api.client(ALICE) as alice:
        free = await submit(bob, priority=3)
        paid = await submit(alice)
    assert free["tier"] == "free"
    assert paid["tier"] == "paid"
    url = api.settings.rabbitmq_url
    free_queue = [
        TaskMessage.model_validate_json(m.body)
        for m in await queue_messages(url, "tasks.free.queue")
    ]
    paid_queue = [
        TaskMessage.model_validate_json(m.body)
        for m in await queue_messages(url, "tasks.paid.queue")
    ]
    [message] = [m for m in free_queue if m.task_id == free["id"]]
    assert message.tier == "free"
    assert message.priority == 3
    assert paid["id"] in {m.task_id for m in paid_queue}
    assert free["id"] not in {m.task_id for m in paid_queue}


async def test_the_same_idempotency_key_and_body_return_the_same_task(api: RunningApi) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    body = {"task_type": "diag.sleep", "parameters": {"seconds": 2}}
    async with api.client(ALICE) as client:
        first = await client.post("/v1/tasks", json=body, headers=key)
        # a retry, including many at once, never makes a second task
        retries = await asyncio.gather(
            *(client.post("/v1/tasks", json=body, headers=key) for _ in range(10))
        )
        listed = (await client.get("/v1/tasks", params={"limit": 500})).json()["items"]
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    assert {r.status_code for r in retries} == {202}
    assert {r.json()["id"] for r in retries} == {first.json()["id"]}
    assert all(r.headers["idempotent-replayed"] == "true" for r in retries)
    assert [t["id"] for t in listed].count(first.json()["id"]) == 1


async def test_the_same_idempotency_key_with_another_body_is_a_409(api: RunningApi) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    async with api.client(ALICE) as client:
        first = await client.post(
            "/v1/tasks", json={"task_type": "diag.sleep", "parameters": {"seconds": 2}}, headers=key
        )
        other = await client.post(
            "/v1/tasks", json={"task_type": "diag.sleep", "parameters": {"seconds": 3}}, headers=key
        )
        same = await client.post(
            "/v1/tasks", json={"task_type": "diag.sleep", "parameters": {"seconds": 2}}, headers=key
        )
    assert first.status_code == 202
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert same.json()["id"] == first.json()["id"]


async def test_idempotency_keys_are_scoped_per_user(api: RunningApi) -> None:
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex}"}
    async with api.client(ALICE) as alice, api.client(BOB) as bob:
        mine = await alice.post("/v1/tasks", json={"task_type": "diag.noop"}, headers=key)
        # another user, same key, even another body: a task of their own, no conflict
        theirs = await bob.post("/v1/tasks", json={"task_type": "diag.sleep"}, headers=key)
        hidden = await bob.get(f"/v1/tasks/{mine.json()['id']}")
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["user_id"] == "bob"
    assert hidden.status_code == 404


async def test_a_submission_is_stored_with_its_outbox_and_dispatched_once(
    api: RunningApi, api_store: Store
) -> None:
    async with api.client(ALICE) as client:
        task = await submit(client)
    doc = await api_store.tasks.find_one({"_id": task["id"]})
    assert doc is not None
    assert list(doc["outbox"]) == [f"{task['id']}:1"]  # until the aggregator folds it
    assert doc["exec"]["open"] is True
    messages = await queue_messages(api.settings.rabbitmq_url, "tasks.paid.queue")
    assert [m.headers["x-task-id"] for m in messages].count(task["id"]) == 1
