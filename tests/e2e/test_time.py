"""Time on the real processes (three aggregators, two executors): delayed starts,
schedules firing once per due time, overlap, pause and resume, catch-up after the
aggregators were down, and attempts stopped at their time limit."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import API_KEYS, USER_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS"}
ENV = {
    "TASKCORE_LEASE_SECONDS": "3",
    "TASKCORE_RELAY_AFTER_SECONDS": "1",
    "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
    "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
    # A due time found more than a second late counts as missed (the catch-up test
    # tells the policies apart by that); the default is a minute.
    "TASKCORE_SCHEDULE_MISFIRE_GRACE_SECONDS": "1",
    "TASKCORE_TIMEOUT_GRACE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def stack(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    vhost = create_vhost()
    database = f"tc_{uuid.uuid4().hex[:12]}"
    env = {
        "RABBITMQ_URL": url_for_vhost(RABBITMQ_URL, vhost),
        "MONGO_URL": mongo_url,
        "MONGO_DB": database,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        **ENV,
    }
    s = Stack(env=env, log_dir=tmp_path_factory.mktemp("time"))
    try:
        s.start(executors=2, aggregators=3)
        yield s
    finally:
        s.stop()
        print(s.logs())
        with MongoClient(mongo_url) as client:
            client.drop_database(database)
        delete_vhost(vhost)


def client(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.api.url, headers=AUTH, timeout=30)


def at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


async def submit(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await c.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def until_terminal(
    c: httpx.AsyncClient, task_id: str, within_s: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        task: dict[str, Any] = (await c.get(f"/v1/tasks/{task_id}")).json()
        return task if task["status"] in TERMINAL else None

    return await wait_for_async(probe, timeout=within_s, message=f"{task_id} terminal")


async def events(c: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    page = (await c.get(f"/v1/tasks/{task_id}/events", params={"limit": 1000})).json()
    items: list[dict[str, Any]] = page["items"]
    return items


async def passed(moment: datetime) -> None:
    """Wait until the clock has passed ``moment`` (a condition on time, not a guess)."""

    async def probe() -> bool:
        return datetime.now(UTC) > moment

    await wait_for_async(probe, timeout=120, interval=0.05, message=f"the time {moment}")


# ---- delayed start --------------------------------------------------------------------


@pytest.mark.parametrize("delay_s", [3.7, 5.0], ids=["from the store", "via a delay queue"])
async def test_a_delayed_task_does_not_start_early_and_starts_within_a_second_of_its_time(
    stack: Stack, delay_s: float
) -> None:
    async with client(stack) as c:
        task = await submit(c, task_type="diag.noop", delay_seconds=delay_s)
        assert task["status"] == "QUEUED"
        done = await until_terminal(c, task["id"])
        started = [e for e in await events(c, task["id"]) if e["type"] == "task.started"]
    assert done["status"] == "COMPLETED"
    late = at(started[0]["occurred_at"]) - at(task["scheduled_for"])
    assert timedelta(0) <= late < timedelta(seconds=1), late


async def test_a_delayed_task_cancelled_before_its_time_never_runs(stack: Stack) -> None:
    async with client(stack) as c:
        task = await submit(c, task_type="diag.noop", delay_seconds=2.3)
        assert (await c.post(f"/v1/tasks/{task['id']}/cancel")).status_code == 202
        assert (await until_terminal(c, task["id"]))["status"] == "CANCELLED"
        await passed(at(task["scheduled_for"]) + timedelta(seconds=2))
        types = [e["type"] for e in await events(c, task["id"])]
    assert types == ["task.submitted", "task.cancelled"]


# ---- schedules ------------------------------------------------------------------------


async def create_schedule(
    c: httpx.AsyncClient, cron: str, task: dict[str, Any], **more: Any
) -> tuple[str, str]:
    """A schedule whose tasks carry a label of their own; returns its id and the label."""
    label = uuid.uuid4().hex[:12]
    body = {
        "name": f"test {label}",
        "cron": cron,
        "task": {**task, "labels": {"run": label}},
        **more,
    }
    response = await c.post("/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], label


async def runs(c: httpx.AsyncClient, label: str) -> list[dict[str, Any]]:
    """The tasks a schedule made, oldest due time first."""
    page = await c.get("/v1/tasks", params={"label": f"run:{label}", "limit": 500})
    return sorted(page.json()["items"], key=lambda t: t["scheduled_for"])


async def until_runs(
    c: httpx.AsyncClient, label: str, count: int, within_s: float = 60
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = await runs(c, label)
        return found if len(found) >= count else None

    return await wait_for_async(probe, timeout=within_s, interval=0.2, message=f"{count} runs")


async def test_a_3_second_schedule_fires_once_per_due_time_across_three_aggregators(
    stack: Stack,
) -> None:
    async with client(stack) as c:
        schedule_id, label = await create_schedule(
            c, "*/3 * * * * *", {"task_type": "diag.noop"}, catch_up="one"
        )
        await until_runs(c, label, 5, within_s=40)
        assert (await c.delete(f"/v1/schedules/{schedule_id}")).status_code == 204
        made = await runs(c, label)
        for task in made:
            await until_terminal(c, task["id"])
        schedule_gone = (await c.get(f"/v1/schedules/{schedule_id}")).status_code
    due = [at(t["scheduled_for"]) for t in made]
    assert len(due) == len(set(due)), "one task per due time"
    assert all(d.second % 3 == 0 and d.microsecond == 0 for d in due)
    assert all(b - a == timedelta(seconds=3) for a, b in itertools.pairwise(due)), due
    assert {t["schedule_id"] for t in made} == {schedule_id}
    assert schedule_gone == 404


async def test_overlap_skip_creates_no_task_while_the_previous_run_is_unfinished(
    stack: Stack,
) -> None:
    async with client(stack) as c:
        schedule_id, label = await create_schedule(
            c,
            "*/2 * * * * *",
            {"task_type": "diag.sleep", "parameters": {"seconds": 5}},
            overlap="skip",
        )
        first, second = (await until_runs(c, label, 2, within_s=40))[:2]
        await c.delete(f"/v1/schedules/{schedule_id}")
        first = await until_terminal(c, first["id"])
    assert at(second["scheduled_for"]) >= at(first["finished_at"])
    assert at(second["scheduled_for"]) - at(first["scheduled_for"]) >= timedelta(seconds=6)


async def test_a_paused_schedule_creates_nothing_until_resumed(stack: Stack) -> None:
    async with client(stack) as c:
        schedule_id, label = await create_schedule(c, "*/2 * * * * *", {"task_type": "diag.noop"})
        await until_runs(c, label, 1)
        paused = (await c.post(f"/v1/schedules/{schedule_id}/pause")).json()
        assert paused["paused"] is True
        count = len(await runs(c, label))
        await passed(datetime.now(UTC) + timedelta(seconds=5))
        assert len(await runs(c, label)) <= count + 1  # at most a run decided as it paused
        paused_count = len(await runs(c, label))
        await passed(datetime.now(UTC) + timedelta(seconds=3))
        assert len(await runs(c, label)) == paused_count
        resumed_at = datetime.now(UTC)
        assert (await c.post(f"/v1/schedules/{schedule_id}/resume")).json()["paused"] is False
        after = await until_runs(c, label, paused_count + 1)
        await c.delete(f"/v1/schedules/{schedule_id}")
    assert at(after[-1]["scheduled_for"]) > resumed_at  # catch_up none: nothing missed ran


# ---- time limits ----------------------------------------------------------------------


async def test_a_sleep_over_its_time_limit_fails_with_task_timeout_and_is_retried(
    stack: Stack,
) -> None:
    async with client(stack) as c:
        task = await submit(
            c,
            task_type="diag.sleep",
            parameters={"seconds": 30},
            timeout_seconds=1,
            max_attempts=2,
        )
        done = await until_terminal(c, task["id"])
        log = await events(c, task["id"])
    retried = [e for e in log if e["type"] == "task.retrying"]
    assert [e["data"]["error"]["type"] for e in retried] == ["TaskTimeout"]
    assert retried[0]["data"]["error"]["retryable"] is True
    assert (done["status"], done["attempts"], done["error"]["type"]) == (
        "DEAD_LETTER",
        2,
        "TaskTimeout",
    )
    took = at(done["finished_at"]) - at(done["started_at"])
    assert took < timedelta(seconds=15), "stopped at its limit, not after its 30 s"


# ---- catch-up after an outage (last: it stops the aggregators) ------------------------


async def test_after_the_aggregators_were_down_catch_up_one_runs_the_missed_time_and_none_skips(
    stack: Stack,
) -> None:
    async with client(stack) as c:
        # The firing service goes down...
        for aggregator in stack.processes["aggregator"]:
            aggregator.stop()
        # ...and two schedules (once a minute, at a second a few seconds from now) are
        # due while it is down: one catches up, one does not.
        due = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
        cron = f"{due.second} * * * * *"
        one_id, one = await create_schedule(c, cron, {"task_type": "diag.noop"}, catch_up="one")
        none_id, none = await create_schedule(c, cron, {"task_type": "diag.noop"})
        for schedule_id in (one_id, none_id):
            view = (await c.get(f"/v1/schedules/{schedule_id}")).json()
            assert at(view["next_run_at"]) == due
        await passed(due + timedelta(seconds=2))  # missed: more than the grace late
        await asyncio.gather(*(asyncio.to_thread(a.start) for a in stack.processes["aggregator"]))

        async def skipped() -> bool:
            view = (await c.get(f"/v1/schedules/{none_id}")).json()
            return at(view["next_run_at"]) > due

        [caught] = await until_runs(c, one, 1, within_s=30)
        await wait_for_async(skipped, timeout=30, message="the missed run skipped")
        one_view = (await c.get(f"/v1/schedules/{one_id}")).json()
        none_view = (await c.get(f"/v1/schedules/{none_id}")).json()
        none_runs = await runs(c, none)
        for schedule_id in (one_id, none_id):
            await c.delete(f"/v1/schedules/{schedule_id}")
    assert at(caught["scheduled_for"]) == due
    assert at(caught["created_at"]) - due > timedelta(seconds=1), "run late, after the outage"
    assert (one_view["last_task_id"], at(one_view["last_run_at"])) == (caught["id"], due)
    assert none_runs == []
    assert at(none_view["next_run_at"]) == due + timedelta(minutes=1)
    assert none_view["last_task_id"] is None
