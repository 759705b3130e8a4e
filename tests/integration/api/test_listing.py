"""Listing tasks: filters, and cursor pages that return each task exactly once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from taskcore.adapters.mongo import Store
from taskcore.submission import NewTask, new_task_document
from taskcore_api.cursors import encode_cursor

from tests.integration.api.support import ALICE, BOB, ROOT, StartApi, submit


async def walk(
    client: httpx.AsyncClient, params: dict[str, Any], between: Any = None
) -> list[dict[str, Any]]:
    """Every page of a listing; ``between`` runs after each page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await client.get(
            "/v1/tasks", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        if between is not None:
            await between()


async def test_pages_return_each_task_exactly_once_while_tasks_are_inserted(
    start_api: StartApi,
) -> None:
    api = await start_api()
    async with api.client(ALICE) as alice:
        # a batch shares one creation time, so ties on created_at are many
        batch = await alice.post(
            "/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}] * 30}
        )
        existing = {r["task"]["id"] for r in batch.json()["results"]}
        existing |= {(await submit(alice))["id"] for _ in range(10)}
        inserted: set[str] = set()

        async def insert_more() -> None:
            inserted.add((await submit(alice))["id"])
            more = await alice.post(
                "/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop"}] * 4}
            )
            inserted.update(r["task"]["id"] for r in more.json()["results"])

        items = await walk(alice, {"limit": 7}, insert_more)
    ids = [t["id"] for t in items]
    assert len(ids) == len(set(ids)), "a task came back twice"
    assert set(ids) == existing  # all of them, and none inserted after the walk began
    assert len(inserted) >= 5 * 5
    keys = [(t["created_at"], t["id"]) for t in items]
    assert keys == sorted(keys, reverse=True)


async def test_filters_by_status_type_parent_and_owner(start_api: StartApi, store: Store) -> None:
    api = await start_api()
    async with api.client(ALICE) as alice, api.client(BOB) as bob, api.client(ROOT) as root:
        parent = await submit(alice, "diag.fanout")
        sleeper = await submit(alice, "diag.sleep")
        done = await submit(alice)
        await submit(bob)
        # as the executor creates children, and the aggregator folds outcomes
        for key in ("a", "b"):
            doc, _ = new_task_document(
                NewTask(
                    user_id="alice",
                    task_type="diag.noop",
                    parameters={},
                    parent_task_id=parent["id"],
                    root_task_id=parent["id"],
                    task_id=f"{parent['id']}-{key}",
                ),
                now=datetime.now(UTC),
            )
            await store.tasks.insert_one(doc)
        await store.tasks.update_one({"_id": done["id"]}, {"$set": {"status": "COMPLETED"}})
        await store.tasks.update_one({"_id": sleeper["id"]}, {"$set": {"status": "FAILED"}})

        async def ids(client: httpx.AsyncClient, **params: Any) -> set[str]:
            return {t["id"] for t in await walk(client, params)}

        assert await ids(alice, status="COMPLETED") == {done["id"]}
        assert await ids(alice, status=["COMPLETED", "FAILED"]) == {done["id"], sleeper["id"]}
        assert await ids(alice, task_type="diag.sleep") == {sleeper["id"]}
        assert await ids(alice, parent_task_id=parent["id"]) == {
            f"{parent['id']}-a",
            f"{parent['id']}-b",
        }
        assert await ids(bob, parent_task_id=parent["id"]) == set()
        assert len(await ids(root)) == 6
        assert len(await ids(root, user_id="bob")) == 1
        bad = await alice.get("/v1/tasks", params={"status": "SLEEPING"})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "query.status.0"


async def test_created_time_bounds_are_exact_to_the_millisecond(start_api: StartApi) -> None:
    api = await start_api()
    async with api.client(ALICE) as alice:
        tasks = [await submit(alice) for _ in range(6)]
        times = [t["created_at"] for t in tasks]
        assert len(set(times)) == 6, "submissions share a millisecond; the test needs them apart"
        # tasks a few ms apart, mostly within one second: the bounds must still be exact
        between = await walk(alice, {"created_after": times[1], "created_before": times[4]})
        after = await walk(alice, {"created_after": times[4], "limit": 1})
        before = await walk(alice, {"created_before": times[1], "limit": 1})
    assert [t["id"] for t in between] == [tasks[3]["id"], tasks[2]["id"]]
    assert [t["id"] for t in after] == [tasks[5]["id"]]
    assert [t["id"] for t in before] == [tasks[0]["id"]]


async def test_a_cursor_that_is_not_ours_or_a_limit_out_of_range_is_a_422(
    start_api: StartApi,
) -> None:
    api = await start_api()
    async with api.client(ALICE) as alice:
        forged = await alice.get("/v1/tasks", params={"cursor": "bm90LWEtY3Vyc29y"})
        garbage = await alice.get("/v1/tasks", params={"cursor": "%%%"})
        # well-formed, but not what a cursor holds
        mistyped = await alice.get(
            "/v1/tasks", params={"cursor": encode_cursor({"t": "x", "i": 1})}
        )
        events = await alice.get(
            f"/v1/tasks/{(await submit(alice))['id']}/events",
            params={"cursor": encode_cursor({"s": "x"})},
        )
        too_many = await alice.get("/v1/tasks", params={"limit": 501})
    for response in (forged, garbage, mistyped, events):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_cursor"
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["field"] == "query.limit"
