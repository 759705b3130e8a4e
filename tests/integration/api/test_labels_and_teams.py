"""Labels and teams in listings: validation, all-must-match label filters under concurrent
inserts, own-plus-team listings with cursors, and the indexes that serve them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from taskcore.adapters.mongo import Store
from taskcore.submission import NewTask, new_task_document
from taskcore_api.handlers.queries import NEWEST_FIRST, TaskFilters, listing_queries
from taskcore_api.identity.principal import Principal

from tests.integration.api.support import ALICE, CAROL, DAVE, ROOT, RunningApi, StartApi
from tests.integration.api.test_listing import walk


async def post(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await c.post("/v1/tasks", json={"task_type": "diag.noop", **body})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({f"k{i}": "v" for i in range(21)}, "labels"),
        ({"Project": "1"}, "labels.Project.[key]"),
        ({"a:b": "1"}, "labels.a:b.[key]"),
        ({"x" * 64: "1"}, f"labels.{'x' * 64}.[key]"),
        ({"ok": "v" * 257}, "labels.ok"),
        ({"ok": 42}, "labels.ok"),
    ],
    ids=["21 keys", "upper case", "colon", "64 chars", "long value", "not a string"],
)
async def test_invalid_labels_are_a_422_naming_the_field(
    api: RunningApi, labels: dict[str, Any], field: str
) -> None:
    async with api.client(ALICE) as c:
        single = await c.post("/v1/tasks", json={"task_type": "diag.noop", "labels": labels})
        batch = await c.post(
            "/v1/tasks/batch", json={"tasks": [{"task_type": "diag.noop", "labels": labels}]}
        )
    assert single.status_code == 422
    assert field in [d["field"] for d in single.json()["error"]["details"]]
    [item] = batch.json()["results"]
    assert field in [d["field"] for d in item["error"]["details"]]


async def test_labels_are_returned_on_the_task_and_filter_with_all_matching(
    api: RunningApi,
) -> None:
    async with api.client(ALICE) as c:
        both = await post(c, labels={"project_id": "42", "scene_id": "7"})
        project_only = await post(c, labels={"project_id": "42", "scene_id": "8"})
        other = await post(c, labels={"project_id": "43", "scene_id": "7"})
        read = (await c.get(f"/v1/tasks/{both['id']}")).json()
        by_both = await walk(c, {"label": ["project_id:42", "scene_id:7"]})
        by_project = await walk(c, {"label": "project_id:42"})
    assert read["labels"] == {"project_id": "42", "scene_id": "7"}
    assert [t["id"] for t in by_both] == [both["id"]]
    assert {t["id"] for t in by_project} == {both["id"], project_only["id"]}
    assert other["id"] not in {t["id"] for t in by_project}


async def test_a_label_filter_walked_page_by_page_under_concurrent_inserts_returns_each_match_once(
    start_api: StartApi,
) -> None:
    api = await start_api()
    async with api.client(ALICE) as c:
        matching = [await post(c, labels={"project_id": "42"}) for _ in range(25)]
        for _ in range(10):
            await post(c, labels={"project_id": "43"})
        inserting = True

        async def insert_more() -> None:
            while inserting:
                await asyncio.gather(
                    post(c, labels={"project_id": "42"}), post(c, labels={"project_id": "43"})
                )

        writer = asyncio.create_task(insert_more())
        try:
            pages = await walk(
                c, {"label": "project_id:42", "limit": 4}, lambda: asyncio.sleep(0.01)
            )
        finally:
            inserting = False
            await writer
    ids = [t["id"] for t in pages]
    assert len(ids) == len(set(ids)), "a task was listed twice"
    assert {t["id"] for t in matching} <= set(ids), "a task that existed was missed"
    assert all(t["labels"] == {"project_id": "42"} for t in pages)
    # As times, not strings: a time on a whole second is written without its fraction.
    keys = [(datetime.fromisoformat(t["created_at"]), t["id"]) for t in pages]
    assert keys == sorted(keys, reverse=True), "newest first"


async def test_a_listing_is_the_callers_own_tasks_and_their_teams_page_by_page(
    start_api: StartApi,
) -> None:
    api = await start_api()
    async with (
        api.client(ALICE) as alice,  # teams: t1
        api.client(CAROL) as carol,  # teams: t1
        api.client(DAVE) as dave,  # teams: t2
    ):
        expected = set()
        for _ in range(4):
            expected.add((await post(alice))["id"])
            expected.add((await post(carol, team_id="t1"))["id"])
            await post(carol)  # carol's own: not alice's to see
            await post(dave, team_id="t2")
        mine_and_team = await walk(alice, {"limit": 3})
        team_only = await walk(alice, {"team_id": "t1", "limit": 3})
        other_team = await alice.get("/v1/tasks", params={"team_id": "t2"})
        daves_view = await walk(dave, {"limit": 50})
    ids = [t["id"] for t in mine_and_team]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    keys = [(t["created_at"], t["id"]) for t in mine_and_team]
    assert keys == sorted(keys, reverse=True)
    assert {t["team_id"] for t in team_only} == {"t1"}
    assert len(team_only) == 4
    assert other_team.status_code == 403
    assert other_team.json()["error"]["details"][0]["field"] == "query.team_id"
    assert {t["user_id"] for t in daves_view} == {"dave"}


async def test_an_admin_lists_by_team_or_user(start_api: StartApi) -> None:
    api = await start_api()
    async with api.client(CAROL) as carol, api.client(ROOT) as root:
        shared = await post(carol, team_id="t1")
        await post(carol)
        by_team = await walk(root, {"team_id": "t1"})
        by_user = await walk(root, {"user_id": "carol"})
    assert [t["id"] for t in by_team] == [shared["id"]]
    assert len(by_user) == 2


# ---- the indexes ------------------------------------------------------------------------

ALICE_P = Principal(user_id="alice", teams=frozenset({"t1", "t2"}))
ADMIN_P = Principal(user_id="root", role="admin")


def plan_stages(explained: dict[str, Any]) -> str:
    return str(explained.get("queryPlanner", {}).get("winningPlan"))


@pytest.mark.parametrize(
    ("principal", "filters", "cursor"),
    [
        (ALICE_P, TaskFilters(), None),
        (ALICE_P, TaskFilters(), "0001764800000000:ffff"),
        (ALICE_P, TaskFilters(label_terms=["project_id:42", "scene_id:7"]), None),
        (ALICE_P, TaskFilters(team_id="t1", status=None), None),
        (ADMIN_P, TaskFilters(), None),
        (ADMIN_P, TaskFilters(user_id="bob"), "0001764800000000:ffff"),
    ],
    ids=["own and teams", "with a cursor", "labels", "one team", "admin", "admin by user"],
)
async def test_every_listing_query_is_served_by_an_index_with_a_limit(
    api: RunningApi,
    api_store: Store,
    principal: Principal,
    filters: TaskFilters,
    cursor: str | None,
) -> None:
    async with api.client(ALICE) as c:  # the API created the indexes at start
        await post(c, labels={"project_id": "42", "scene_id": "7"}, team_id="t1")
    standin = await api_store.is_standin()
    for query in listing_queries(principal, filters, cursor):
        found = api_store.tasks.find(query).sort(NEWEST_FIRST).limit(51)
        plan = plan_stages(await found.explain())
        if standin:  # SQLite's plan: an index search, and no sort of its own
            assert "USING INDEX" in plan, (query, plan)
            assert "TEMP B-TREE" not in plan, (query, plan)
        else:  # MongoDB's: an index scan in key order, no in-memory sort
            assert "IXSCAN" in plan, (query, plan)
            assert "'stage': 'SORT'" not in plan, (query, plan)


async def test_tasks_stored_before_listing_keys_existed_are_listed_after_a_restart(
    start_api: StartApi, store: Store
) -> None:
    """The API backfills ``list_key`` and ``label_terms`` at start."""
    doc, _ = new_task_document(
        NewTask(user_id="alice", task_type="diag.noop", parameters={}, labels={"old": "yes"}),
        now=datetime.now(UTC),
    )
    await store.tasks.insert_one(doc)
    await store.tasks.update_one({"_id": doc["_id"]}, {"$unset": {"list_key": 1, "label_terms": 1}})
    api = await start_api()
    async with api.client(ALICE) as alice:
        listed = await walk(alice, {"label": "old:yes"})
    assert [t["id"] for t in listed] == [doc["_id"]]
