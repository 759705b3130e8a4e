"""Schedules and delayed submissions over HTTP: validation naming the field, who sees and
manages a schedule, pause and resume, and the ``taskcore schedules`` command."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from taskcore.cli import build_parser
from taskcore.schedules_cli import run as run_schedules_cli

from tests.integration.api.support import ALICE, BOB, CAROL, DAVE, ROOT, RunningApi

SCHEDULE = {
    "name": "every minute",
    "cron": "0 * * * * *",
    "task": {"task_type": "diag.sleep", "parameters": {"seconds": 1}, "team_id": "t1"},
    "overlap": "skip",
    "catch_up": "one",
}


async def create(api: RunningApi, key: str = ALICE, **changes: Any) -> httpx.Response:
    async with api.client(key) as client:
        return await client.post("/v1/schedules", json={**SCHEDULE, **changes})


def fields(response: httpx.Response) -> list[str]:
    return [d["field"] for d in response.json()["error"]["details"]]


async def test_a_schedule_is_created_with_its_next_due_time(api: RunningApi) -> None:
    response = await create(api)
    assert response.status_code == 201, response.text
    schedule = response.json()
    assert schedule["paused"] is False
    assert (schedule["overlap"], schedule["catch_up"], schedule["timezone"]) == (
        "skip",
        "one",
        "UTC",
    )
    next_run = datetime.fromisoformat(schedule["next_run_at"])
    assert next_run.second == 0
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(minutes=1)
    assert schedule["task"]["task_type"] == "diag.sleep"
    assert (schedule["last_run_at"], schedule["last_task_id"]) == (None, None)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"timezone": "Nowhere/Atlantis"}, "timezone"),
        ({"task": {"task_type": "no.such.type"}}, "task.task_type"),
        (
            {"task": {"task_type": "diag.sleep", "parameters": {"seconds": -1}}},
            "task.parameters.seconds",
        ),
        ({"task": {"task_type": "diag.noop", "run_at": "2031-01-01T00:00:00Z"}}, "task.run_at"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"catch_up": "all"}, "catch_up"),
    ],
)
async def test_an_invalid_schedule_is_a_422_naming_the_field(
    api: RunningApi, changes: dict[str, Any], field: str
) -> None:
    response = await create(api, **changes)
    assert response.status_code == 422, response.text
    assert field in fields(response)


async def test_a_schedule_for_a_team_the_caller_is_not_in_is_a_403(api: RunningApi) -> None:
    response = await create(api, key=DAVE)
    assert response.status_code == 403


async def test_a_team_schedule_is_seen_and_managed_by_the_team_and_hidden_from_others(
    api: RunningApi,
) -> None:
    schedule_id = (await create(api)).json()["id"]
    for key, seen in ((ALICE, True), (CAROL, True), (ROOT, True), (BOB, False), (DAVE, False)):
        async with api.client(key) as client:
            one = await client.get(f"/v1/schedules/{schedule_id}")
            listed = await client.get("/v1/schedules", params={"limit": 500})
            paused = await client.post(f"/v1/schedules/{schedule_id}/pause")
        assert one.status_code == (200 if seen else 404), key
        assert (schedule_id in {s["id"] for s in listed.json()["items"]}) is seen, key
        assert paused.status_code == (200 if seen else 404), key


async def test_pause_resume_and_delete(api: RunningApi) -> None:
    schedule_id = (await create(api)).json()["id"]
    async with api.client(ALICE) as client:
        paused = (await client.post(f"/v1/schedules/{schedule_id}/pause")).json()
        assert (paused["paused"], paused["next_run_at"]) == (True, None)
        resumed = (await client.post(f"/v1/schedules/{schedule_id}/resume")).json()
        assert resumed["paused"] is False
        assert resumed["next_run_at"] is not None
        assert (await client.delete(f"/v1/schedules/{schedule_id}")).status_code == 204
        assert (await client.get(f"/v1/schedules/{schedule_id}")).status_code == 404
        assert (await client.post(f"/v1/schedules/{schedule_id}/resume")).status_code == 404


async def test_listing_pages_through_every_schedule_once(api: RunningApi) -> None:
    made = {
        (await create(api, key=BOB, task={"task_type": "diag.noop"})).json()["id"] for _ in range(5)
    }
    seen: list[str] = []
    cursor = None
    async with api.client(BOB) as client:
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/schedules", params=params)).json()
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert made <= set(seen)
    assert len(seen) == len(set(seen))


async def test_the_cli_lists_pauses_resumes_and_deletes(api: RunningApi) -> None:
    schedule_id = (await create(api)).json()["id"]

    def cli(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = build_parser().parse_args(["schedules", "--url", api.url, "--key", ALICE, *argv])
        return run_schedules_cli(args, out, out), out.getvalue()

    status, listing = await asyncio.to_thread(cli, "list")
    assert status == 0
    assert schedule_id in listing
    assert (await asyncio.to_thread(cli, "pause", schedule_id))[0] == 0
    status, shown = await asyncio.to_thread(cli, "show", schedule_id, "--json")
    assert status == 0
    assert '"paused": true' in shown
    assert (await asyncio.to_thread(cli, "resume", schedule_id))[0] == 0
    assert (await asyncio.to_thread(cli, "delete", schedule_id))[0] == 0
    assert (await asyncio.to_thread(cli, "show", schedule_id))[0] == 4


# ---- delayed submissions and time limits ----------------------------------------------


async def submit(api: RunningApi, **body: Any) -> httpx.Response:
    async with api.client(ALICE) as client:
        return await client.post("/v1/tasks", json={"task_type": "diag.sleep", **body})


async def test_a_delayed_submission_is_queued_with_its_start_time(api: RunningApi) -> None:
    before = datetime.now(UTC)
    response = await submit(api, delay_seconds=120, timeout_seconds=30)
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["status"] == "QUEUED"
    scheduled = datetime.fromisoformat(task["scheduled_for"])
    assert timedelta(seconds=119) < scheduled - before < timedelta(seconds=122)
    assert task["timeout_seconds"] == 30
    run_at = (datetime.now(UTC) + timedelta(days=10)).astimezone(timezone(timedelta(hours=2)))
    at = (await submit(api, run_at=run_at.isoformat())).json()
    assert datetime.fromisoformat(at["scheduled_for"]) == run_at.replace(
        microsecond=run_at.microsecond // 1000 * 1000
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay_seconds"),
        ({"delay_seconds": 31 * 86400}, "delay_seconds"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),  # no offset
        ({"run_at": "not a time"}, "run_at"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 90_000}, "timeout_seconds"),  # over 24 h
        ({"timeout_seconds": 4000}, "timeout_seconds"),  # over diag.sleep's own 3660 s
    ],
)
async def test_an_invalid_start_time_or_time_limit_is_a_422_naming_it(
    api: RunningApi, body: dict[str, Any], field: str
) -> None:
    response = await submit(api, **body)
    assert response.status_code == 422, response.text
    assert field in fields(response)


async def test_a_run_at_more_than_30_days_ahead_is_a_422(api: RunningApi) -> None:
    far = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    response = await submit(api, run_at=far)
    assert response.status_code == 422
    assert fields(response) == ["run_at"]


async def test_a_batch_item_with_an_invalid_delay_fails_alone(api: RunningApi) -> None:
    async with api.client(ALICE) as client:
        response = await client.post(
            "/v1/tasks/batch",
            json={
                "tasks": [
                    {"task_type": "diag.noop", "delay_seconds": 30},
                    {"task_type": "diag.noop", "delay_seconds": -3},
                ]
            },
        )
    ok, bad = response.json()["results"]
    assert ok["ok"]
    assert ok["task"]["scheduled_for"] is not None
    assert not bad["ok"]
    assert bad["error"]["details"][0]["field"] == "delay_seconds"


async def test_a_task_type_shows_its_own_time_limit(api: RunningApi) -> None:
    async with api.client(ALICE) as client:
        types = {t["name"]: t for t in (await client.get("/v1/task-types")).json()["items"]}
    assert types["diag.sleep"]["timeout_seconds"] == 3660
    assert types["diag.noop"]["timeout_seconds"] is None
