"""Batch submission: per-item results in order, bulk write, every accepted task dispatched."""

from __future__ import annotations

import json
import uuid

from taskcore.adapters.mongo import Store

from tests.integration.api.support import ALICE, RunningApi, queue_messages


async def test_one_bad_item_does_not_sink_the_others(api: RunningApi, api_store: Store) -> None:
    key = uuid.uuid4().hex
    items = [
        {"task_type": "diag.noop"},
        {"task_type": "no.such.type"},
        {"task_type": "diag.sleep", "parameters": {"seconds": -5}},
        {"task_type": "diag.noop", "priority": "high"},
        "not even an object",
        {"task_type": "diag.sleep", "parameters": {"seconds": 0.1}, "idempotency_key": key},
        {"task_type": "diag.sleep", "parameters": {"seconds": 0.1}, "idempotency_key": key},
        {"task_type": "diag.sleep", "parameters": {"seconds": 0.2}, "idempotency_key": key},
    ]
    async with api.client(ALICE) as client:
        response = await client.post("/v1/tasks/batch", json={"tasks": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["ok"] for r in results] == [True, False, False, False, False, True, True, False]
    assert results[1]["error"]["code"] == "unknown_task_type"
    assert results[2]["error"]["code"] == "invalid_parameters"
    assert results[2]["error"]["details"][0]["field"] == "parameters.seconds"
    assert results[3]["error"]["details"][0]["field"] == "priority"
    assert results[4]["error"]["code"] == "validation_failed"
    # the same key twice in one batch is one task; with another body, a conflict
    assert results[5]["task"]["id"] == results[6]["task"]["id"]
    assert results[7]["error"]["code"] == "idempotency_conflict"
    ids = {results[0]["task"]["id"], results[5]["task"]["id"]}
    assert await api_store.tasks.count_documents({"_id": {"$in": list(ids)}}) == 2


async def test_a_thousand_tasks_are_stored_and_each_dispatched_once(api: RunningApi) -> None:
    async with api.client(ALICE) as client:
        response = await client.post(
            "/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}] * 1000}
        )
        too_many = await client.post(
            "/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}] * 1001}
        )
    results = response.json()["results"]
    assert len(results) == 1000
    assert all(r["ok"] for r in results)
    ids = {r["task"]["id"] for r in results}
    assert len(ids) == 1000
    dispatched = [
        m.headers["x-task-id"]
        for m in await queue_messages(api.settings.rabbitmq_url, "tasks.paid.queue")
    ]
    assert ids <= set(dispatched)
    assert len([i for i in dispatched if i in ids]) == 1000
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["field"] == "tasks"


async def test_a_batch_body_may_exceed_one_mib_but_not_sixteen(api: RunningApi) -> None:
    filler = "a" * 1500
    fits = {"tasks": [{"task_type": "diag.noop", "idempotency_key": filler}] * 1000}
    too_big = json.dumps({"tasks": [{"task_type": "diag.noop", "x": "a" * 17_000}] * 1000})
    async with api.client(ALICE) as client:
        # 1000 items with a 200-character key limit fail per item, but the body is read
        accepted = await client.post("/v1/tasks/batch", json=fits)
        refused = await client.post(
            "/v1/tasks/batch", content=too_big, headers={"content-type": "application/json"}
        )
    assert len(json.dumps(fits)) > 1024 * 1024
    assert accepted.status_code == 200
    assert accepted.json()["results"][0]["error"]["details"][0]["field"] == "idempotency_key"
    assert refused.status_code == 413
