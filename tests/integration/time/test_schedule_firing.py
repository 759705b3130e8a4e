"""The schedule sweep over the real store and broker: one task per due time whatever the
number of sweeps, missed times by the catch-up policy, overlap skip, and a run decided by
a sweep that died is still created, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.clock import to_ms
from taskcore.quotas import QuotaPolicy, Window
from taskcore.scheduling.cron import Cron
from taskcore.scheduling.documents import (
    ScheduleDocuments,
    new_schedule_document,
    schedule_task_id,
)
from taskcore.scheduling.firing import ScheduleFirer
from taskcore.scheduling.plan import CatchUp, Overlap

START = datetime(2030, 1, 1, tzinfo=UTC)
RUN = {"task_type": "diag.noop", "parameters": {}, "max_attempts": 3, "tier": "paid"}


async def new_schedule(
    store: Store, *, overlap: Overlap = Overlap.ALLOW, catch_up: CatchUp = CatchUp.NONE
) -> str:
    doc = new_schedule_document(
        user_id="alice",
        team_id=None,
        name="every 3 s",
        cron="*/3 * * * * *",
        timezone="UTC",
        task={"task_type": "diag.noop"},
        run=RUN,
        overlap=overlap,
        catch_up=catch_up,
        next_run=Cron.parse("*/3 * * * * *").next_after(START),
        now=START,
    )
    await store.db["schedules"].insert_one(doc)
    return str(doc["_id"])


def firer(
    store: Store, publisher: Publisher, at: datetime, quota: QuotaPolicy | None = None
) -> ScheduleFirer:
    f = ScheduleFirer(store, publisher, interval_s=0.5, misfire_grace_s=60, quota_policy=quota)
    f.schedules.clock = lambda: to_ms(at)
    return f


async def tasks_of(store: Store, schedule_id: str) -> list[dict[str, Any]]:
    found = store.tasks.find({"schedule_id": schedule_id}, {"scheduled_for": 1, "status": 1})
    return await found.sort("scheduled_for", 1).to_list(None)


async def test_racing_sweeps_create_one_task_per_due_time(
    store: Store, publisher: Publisher
) -> None:
    schedule_id = await new_schedule(store)
    for second in (3, 6, 9):
        at = START + timedelta(seconds=second, milliseconds=200)
        created = await asyncio.gather(*(firer(store, publisher, at).sweep() for _ in range(5)))
        assert sum(created) == 1
    tasks = await tasks_of(store, schedule_id)
    due_ms = [to_ms(START + timedelta(seconds=s)) for s in (3, 6, 9)]
    assert [t["_id"] for t in tasks] == [schedule_task_id(schedule_id, ms) for ms in due_ms]
    schedule = await ScheduleDocuments(store.db["schedules"], lambda: 0).get(schedule_id) or {}
    assert schedule["next_run_ms"] == to_ms(START + timedelta(seconds=12))
    assert schedule["last_task_id"] == tasks[-1]["_id"]


async def test_after_an_outage_none_skips_and_one_runs_the_last_missed_time(
    store: Store, publisher: Publisher
) -> None:
    skipping = await new_schedule(store, catch_up=CatchUp.NONE)
    catching = await new_schedule(store, catch_up=CatchUp.ONE)
    back = START + timedelta(seconds=32)  # due times 3..30 were missed (30 by 2 s)
    await firer(store, publisher, back).sweep()
    assert await tasks_of(store, skipping) == []
    [caught] = await tasks_of(store, catching)
    assert caught["_id"] == schedule_task_id(catching, to_ms(START + timedelta(seconds=30)))


async def test_overlap_skip_creates_none_while_the_previous_run_is_unfinished(
    store: Store, publisher: Publisher
) -> None:
    schedule_id = await new_schedule(store, overlap=Overlap.SKIP)
    await firer(store, publisher, START + timedelta(seconds=3.1)).sweep()
    await firer(store, publisher, START + timedelta(seconds=6.1)).sweep()  # first still open
    [first] = await tasks_of(store, schedule_id)
    # The first run finishes (as its executor would record it)
    await store.tasks.update_one({"_id": first["_id"]}, {"$set": {"exec.finished": True}})
    await firer(store, publisher, START + timedelta(seconds=9.1)).sweep()
    assert len(await tasks_of(store, schedule_id)) == 2


async def test_a_run_decided_by_a_sweep_that_died_is_created_once_later(
    store: Store, publisher: Publisher
) -> None:
    schedule_id = await new_schedule(store)
    schedules = ScheduleDocuments(store.db["schedules"], lambda: to_ms(START))
    due_ms = to_ms(START + timedelta(seconds=3))
    # A sweep decides the run at 3 s (advancing the schedule), then dies
    task_id = schedule_task_id(schedule_id, due_ms)
    assert await schedules.advance(schedule_id, due_ms, due_ms + 3000, (due_ms, task_id))
    assert await firer(store, publisher, START + timedelta(seconds=3.5)).sweep() == 0
    # Later sweeps find it pending, create it (once) and clear it
    later = START + timedelta(seconds=11)  # past the pending run's 10 s
    assert (
        sum(await asyncio.gather(*(firer(store, publisher, later).sweep() for _ in range(3)))) >= 1
    )
    assert [t["_id"] for t in await tasks_of(store, schedule_id)] == [task_id]
    assert "firing" not in (await schedules.get(schedule_id) or {})


async def test_a_run_of_an_owner_over_quota_creates_no_task(
    store: Store, publisher: Publisher
) -> None:
    schedule_id = await new_schedule(store)
    one_a_day = QuotaPolicy({"paid": (Window("day", 86_400_000, 1),)})
    for second in (3, 6):
        await firer(
            store, publisher, START + timedelta(seconds=second, milliseconds=100), one_a_day
        ).sweep()
    [only] = await tasks_of(store, schedule_id)
    assert only["scheduled_for"] == START + timedelta(seconds=3)


async def test_a_pending_run_is_not_overwritten_by_the_next_due_time(
    store: Store, publisher: Publisher
) -> None:
    schedule_id = await new_schedule(store)
    schedules = ScheduleDocuments(store.db["schedules"], lambda: to_ms(START))
    due_ms = to_ms(START + timedelta(seconds=3))
    # A sweep decides the run at 3 s, then dies before creating it
    task_id = schedule_task_id(schedule_id, due_ms)
    assert await schedules.advance(schedule_id, due_ms, due_ms + 3000, (due_ms, task_id))
    # The next due time comes while that run is pending (not yet old enough to recover)
    await firer(store, publisher, START + timedelta(seconds=6.2)).sweep()
    # Then the pending run is created all the same
    await firer(store, publisher, START + timedelta(seconds=11)).sweep()
    assert task_id in [t["_id"] for t in await tasks_of(store, schedule_id)]


async def test_one_unreadable_pending_run_does_not_hold_back_the_others(
    store: Store, publisher: Publisher
) -> None:
    broken, sound = await new_schedule(store), await new_schedule(store)
    schedules = ScheduleDocuments(store.db["schedules"], lambda: to_ms(START))
    due_ms = to_ms(START + timedelta(seconds=3))
    for schedule_id in (broken, sound):  # each decided by a sweep that then died
        run = (due_ms, schedule_task_id(schedule_id, due_ms))
        assert await schedules.advance(schedule_id, due_ms, due_ms + 3000, run)
    await store.db["schedules"].update_one({"_id": broken}, {"$set": {"cron": "not a cron"}})

    await firer(store, publisher, START + timedelta(seconds=11)).sweep()

    assert [t["_id"] for t in await tasks_of(store, sound)] == [run[1]]
