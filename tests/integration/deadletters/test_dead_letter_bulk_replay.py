"""Bulk replay: a durable job that a runner's death neither loses nor repeats."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.topology import task_queue_name
from taskcore.registry import TaskTypeRegistry
from taskcore.testing import wait_for_async
from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.filters import DeadLetterFilter
from taskcore_api.deadletters.jobs import ReplayJobs
from taskcore_api.deadletters.parker import DeadLetterParker
from taskcore_api.deadletters.settings import DeadLetterSettings

from tests.integration.deadletters.conftest import dead_task, dispatches, queue_depth

PAID = task_queue_name("paid")


@pytest.fixture
async def actions(  # no sweeping worker here: the tests play every runner themselves
    store: Store,
    connection: AbstractRobustConnection,
    publisher: Publisher,
    registry: TaskTypeRegistry,
    dl_settings: DeadLetterSettings,
) -> AsyncIterator[DeadLetterActions]:
    parker = DeadLetterParker(store, connection, registry, dl_settings)
    await parker.start()
    yield DeadLetterActions(store, publisher, registry, dl_settings)
    await parker.stop()


async def job_doc(jobs: ReplayJobs, job_id: str) -> Doc:
    job = await jobs.get(job_id)
    assert job is not None
    return job


async def test_a_bulk_replay_whose_runner_dies_midway_resumes_and_replays_each_once(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    # Given eight dead tasks and one that does not match the filter
    dead = [await dead_task(store, publisher, connection) for _ in range(8)]
    await dead_task(store, publisher, connection, task_type="diag.sleep", parameters={"seconds": 0})
    first = ReplayJobs(actions, owner="runner-a")
    job, created = await first.create(
        "job-1",
        DeadLetterFilter(task_type="diag.fail"),
        rate=20.0,
        limit=100,
        by="root",
        request_hash="h",
    )
    assert created
    assert job["total"] == 8
    # When its runner dies after a few replays (cancelled mid-flight, lease left held)
    run = asyncio.create_task(first.run("job-1"))

    async def some_done() -> bool:
        return int((await job_doc(first, "job-1"))["position"]) >= 3

    await wait_for_async(some_done, timeout=10, message="three replays done")
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    stopped_at = int((await job_doc(first, "job-1"))["position"])
    assert stopped_at < 8
    # then another runner cannot take it while the lease holds, and resumes it after
    second = ReplayJobs(actions, owner="runner-b")
    assert await second.run("job-1") is False
    await wait_for_async(lambda: second.run("job-1"), timeout=10, message="the resumed run")

    finished = await job_doc(second, "job-1")
    assert finished["state"] == "done"
    assert finished["position"] == 8
    assert finished["counts"]["replayed"] == 8
    assert sum(finished["counts"].values()) == 8
    # and every dead task was dispatched exactly once more
    sent = await dispatches(connection, 8)
    assert Counter(m.task_id for m in sent) == Counter(d.task_id for d in dead)
    assert {m.dispatch for m in sent} == {2}
    assert await queue_depth(connection, PAID) == 0
    for d in dead:
        task = await store.tasks.find_one({"_id": d.task_id})
        assert task is not None
        assert task["dlq"]["replays"] == 1


async def test_a_bulk_replay_goes_at_its_rate_and_reports_every_outcome(
    store: Store,
    publisher: Publisher,
    connection: AbstractRobustConnection,
    actions: DeadLetterActions,
) -> None:
    dead = [await dead_task(store, publisher, connection) for _ in range(4)]
    # one of them is replayed by hand before the job reaches it
    await actions.replay(dead[2].dead_letter_id, by="root")
    jobs = ReplayJobs(actions, owner="runner")
    await jobs.create("job-2", DeadLetterFilter(), rate=4.0, limit=100, by="root", request_hash="h")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await jobs.run("job-2")
    elapsed = loop.time() - started
    job = await job_doc(jobs, "job-2")
    # the snapshot took only the three still pending; at 4 per second three take >= 0.5 s
    assert job["total"] == 3
    assert elapsed >= 0.45
    assert job["counts"]["replayed"] == 3
    reported = [job["results"][str(i)] for i in range(3)]
    assert [r["id"] for r in reported] == [dead[i].dead_letter_id for i in (0, 1, 3)]
    assert {r["outcome"] for r in reported} == {"replayed"}
    await dispatches(connection, 4)
    assert await queue_depth(connection, PAID) == 0
