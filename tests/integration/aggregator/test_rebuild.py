"""``taskcore rebuild`` against live projections after chaos, and the log's retention."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType
from taskcore.domain.status import TERMINAL
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_aggregator.rebuild import rebuild

from .chaos import Scenario, chaotic, in_messages, mixed_scenario, publish
from .harness import comparable, projections, running_aggregator, wait_for_projections
from .test_parents import family

BOOKKEEPING = ("exec", "outbox", "seq", "children_settled", "request_hash", "cancel_requested")


def rebuild_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGO_URL": settings.mongo_url_or_default, "MONGO_DB": settings.mongo_db}
    return subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "rebuild", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def chaotic_family_scenario(rng: random.Random) -> tuple[Scenario, list[str]]:
    scenario = mixed_scenario(rng, 150)
    parents = [
        family(scenario, rng, ["ok", "dead", "retry_ok", "cancelled"] * 5)[0].task_id,
        family(scenario, rng, ["ok"] * 15, policy="threshold", threshold=0.2)[0].task_id,
    ]
    return scenario, parents


async def run_with_restarts(
    settings: Settings, publisher: Publisher, store: Store, scenario: Scenario, parents: list[str]
) -> None:
    """Fold a chaotic stream while the aggregator is stopped and started twice."""
    rng = random.Random(99)
    messages = in_messages(chaotic(scenario.events, rng, duplicates=0.3), rng)
    thirds = [messages[i::3] for i in range(3)]
    for part in thirds:
        logged = await store.events.count_documents({})
        async with running_aggregator(settings):
            await publish(publisher, part)

            # stop once it has folded some of this part; what it has not acked comes back
            async def grown(before: int = logged) -> bool:
                return await store.events.count_documents({}) > before

            await wait_for_async(grown, timeout=20, message="some of the part folded")
    async with running_aggregator(settings):
        expected = {t: s for t, s in scenario.expected().items() if t not in parents}
        await wait_for_projections(store, expected)

        async def closed() -> bool:
            terminal = [s.value for s in TERMINAL]
            query = {"_id": {"$in": parents}, "status": {"$in": terminal}}
            return await store.tasks.count_documents(query) == len(parents)

        await wait_for_async(closed, timeout=60, interval=0.1, message="parents closed")

        # A parent can close while a reordered child is still on its way (a dead letter
        # whose replay arrives later), so counters settle after closing: wait for the
        # debounced recounts to catch up (bounded), not merely for the parents to close.
        async def counters_settled() -> bool:
            return (await rebuild(store, check=True)).clean

        await wait_for_async(counters_settled, timeout=30, interval=0.5, message="recounts")


async def bookkeeping(store: Store) -> dict[str, dict[str, Any]]:
    return {d["_id"]: {k: d.get(k) for k in BOOKKEEPING} async for d in store.tasks.find({})}


async def test_a_rebuild_after_duplicates_reordering_and_restarts_equals_the_live_state(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    # Given a chaotic run: duplicates, shuffled order, late progress, two restarts
    scenario, parents = chaotic_family_scenario(random.Random(21))
    await scenario.insert(store)
    await run_with_restarts(settings, publisher, store, scenario, parents)
    live = await projections(store)
    kept = await bookkeeping(store)
    # When the projections are recomputed from the log, then nothing differs
    report = await rebuild(store, check=True)
    assert report.clean, report.summary(True)
    assert report.tasks == len(scenario.histories)
    assert report.parents == len(parents)
    # and a damaged projection and damaged counters are found, and repaired
    victim = next(t for t, s in live.items() if s.status.value == "COMPLETED")
    await store.tasks.update_one({"_id": victim}, {"$set": {"status": "QUEUED", "attempts": 9}})
    await store.tasks.update_one({"_id": parents[0]}, {"$set": {"subtasks.completed": 0}})
    checked = rebuild_cli(settings, "--check")
    assert checked.returncode == 1
    assert victim in checked.stdout
    assert parents[0] in checked.stdout
    repaired = rebuild_cli(settings)
    assert repaired.returncode == 0, repaired.stderr
    assert "2 projections were rewritten" not in repaired.stdout  # one projection, one parent
    assert "1 projections were rewritten from the log" in repaired.stdout
    after = await projections(store)
    assert {t: comparable(s) for t, s in after.items()} == {
        t: comparable(s) for t, s in live.items()
    }
    assert {t: s.subtasks for t, s in after.items()} == {t: s.subtasks for t, s in live.items()}
    # and the rebuild left the executor's, the outbox's and the API's fields alone
    assert await bookkeeping(store) == kept


async def test_a_rebuild_of_one_task_rewrites_only_that_task(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(22)
    scenario = mixed_scenario(rng, 8)
    await scenario.insert(store)
    async with running_aggregator(settings):
        await publish(publisher, in_messages(scenario.events, rng))
        await wait_for_projections(store, scenario.expected())
    first, second = list(scenario.histories)[:2]
    for task_id in (first, second):
        await store.tasks.update_one({"_id": task_id}, {"$set": {"priority": 7}})
    report = await rebuild(store, task_ids=[first])
    assert report.differing == [first]
    docs = {d["_id"]: d["priority"] async for d in store.tasks.find({}, {"priority": 1})}
    assert (docs[first], docs[second]) == (0, 7)


LIFECYCLE_BLIND = ("progress", "version", "updated_at")


def lifecycle(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in LIFECYCLE_BLIND}


async def test_progress_events_expire_lifecycle_events_stay_and_a_rebuild_keeps_the_lifecycle(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(23)
    scenario = mixed_scenario(rng, 40)
    events = scenario.events
    progress = [e for e in events if e.type is EventType.PROGRESS]
    lifecycle_events = len(events) - len(progress)
    assert progress
    await scenario.insert(store)
    # Given the aggregator keeps progress events for one second
    async with running_aggregator(settings, progress_retention_seconds=1.0):
        await publish(publisher, in_messages(events, rng))
        await wait_for_projections(store, scenario.expected())
    # Then only progress events carry an expiry
    expiring = await store.events.count_documents({"expires_at": {"$exists": True}})
    logged_progress = await store.events.count_documents({"type": "task.progress"})
    assert expiring == logged_progress <= len(progress)
    assert await store.events.count_documents({"type": {"$ne": "task.progress"}}) == (
        lifecycle_events
    )
    live = {t: comparable(s) for t, s in (await projections(store)).items()}

    # When they expire (at once on the stand-in; within a minute on mongod's TTL monitor)
    async def expired() -> bool:
        return await store.events.count_documents({"type": "task.progress"}) == 0

    await wait_for_async(expired, timeout=90, interval=0.2, message="progress expired")
    # Then every lifecycle event is still there
    assert await store.events.count_documents({}) == lifecycle_events
    # and a rebuild from what is left gives every task the same lifecycle state
    await rebuild(store)
    rebuilt = {t: comparable(s) for t, s in (await projections(store)).items()}
    assert {t: lifecycle(s) for t, s in rebuilt.items()} == {
        t: lifecycle(s) for t, s in live.items()
    }
    assert any(rebuilt[t]["progress"] != live[t]["progress"] for t in live)
