"""Per-tier submission quotas: 429 with Retry-After, counted atomically."""

from __future__ import annotations

import asyncio
import uuid

from taskcore.adapters.mongo import Store

from tests.integration.api.support import ALICE, BOB, StartApi


async def test_a_free_user_over_the_minute_quota_gets_a_429_and_a_paid_user_does_not(
    start_api: StartApi,
) -> None:
    api = await start_api(quota_free_per_minute=3)
    async with api.client(BOB) as bob, api.client(ALICE) as alice:
        accepted = [await bob.post("/v1/tasks", json={"task_type": "diag.noop"}) for _ in range(3)]
        refused = await bob.post("/v1/tasks", json={"task_type": "diag.noop"})
        paid = [await alice.post("/v1/tasks", json={"task_type": "diag.noop"}) for _ in range(5)]
    assert [r.status_code for r in accepted] == [202] * 3
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["window"] == "minute"
    assert error["details"]["limit"] == 3
    assert [r.status_code for r in paid] == [202] * 5


async def test_concurrent_submissions_cannot_overrun_the_quota(
    start_api: StartApi, store: Store
) -> None:
    api = await start_api(quota_free_per_minute=5)
    async with api.client(BOB) as bob:
        responses = await asyncio.gather(
            *(bob.post("/v1/tasks", json={"task_type": "diag.noop"}) for _ in range(20))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] * 5 + [429] * 15
    assert await store.tasks.count_documents({"user_id": "bob"}) == 5


async def test_a_batch_counts_each_task_and_is_refused_whole_when_it_does_not_fit(
    start_api: StartApi, store: Store
) -> None:
    api = await start_api(quota_free_per_minute=5)

    def batch(n: int) -> dict[str, object]:
        return {"tasks": [{"task_type": "diag.noop"}] * n}

    async with api.client(BOB) as bob:
        first = await bob.post("/v1/tasks/batch", json=batch(3))
        too_many = await bob.post("/v1/tasks/batch", json=batch(3))
        # invalid items do not count
        rest = await bob.post(
            "/v1/tasks/batch", json={"tasks": [*batch(2)["tasks"], {"task_type": "nope"}]}
        )
        over_the_limit = await bob.post("/v1/tasks/batch", json=batch(6))
    assert first.status_code == 200
    assert too_many.status_code == 429
    assert rest.status_code == 200
    assert [r["ok"] for r in rest.json()["results"]] == [True, True, False]
    assert over_the_limit.status_code == 429
    assert "more than the minute quota" in over_the_limit.json()["error"]["message"]
    assert await store.tasks.count_documents({"user_id": "bob"}) == 5


async def test_the_day_quota_applies_too_and_a_refusal_costs_nothing(
    start_api: StartApi, store: Store
) -> None:
    api = await start_api(quota_paid_per_minute=10, quota_paid_per_day=2)
    async with api.client(ALICE) as alice:
        ok = [await alice.post("/v1/tasks", json={"task_type": "diag.noop"}) for _ in range(2)]
        refused = [await alice.post("/v1/tasks", json={"task_type": "diag.noop"}) for _ in range(3)]
    assert [r.status_code for r in ok] == [202, 202]
    assert [r.status_code for r in refused] == [429] * 3
    assert refused[0].json()["error"]["details"]["window"] == "day"
    assert 1 <= int(refused[0].headers["retry-after"]) <= 86_400
    # the minute window was given back each time the day window refused
    minute = await store.quotas.find_one({"_id": {"$regex": "^minute:.*:alice$"}})
    assert minute is not None
    assert minute["n"] == 2


async def test_a_retried_submission_with_its_idempotency_key_is_not_counted_again(
    start_api: StartApi,
) -> None:
    api = await start_api(quota_free_per_minute=2)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    async with api.client(BOB) as bob:
        first = await bob.post("/v1/tasks", json={"task_type": "diag.noop"}, headers=key)
        retries = [
            await bob.post("/v1/tasks", json={"task_type": "diag.noop"}, headers=key)
            for _ in range(3)
        ]
        second = await bob.post("/v1/tasks", json={"task_type": "diag.noop"})
        third = await bob.post("/v1/tasks", json={"task_type": "diag.noop"})
    assert first.status_code == 202
    assert [r.status_code for r in retries] == [202] * 3
    assert second.status_code == 202
    assert third.status_code == 429
