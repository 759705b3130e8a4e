"""Parents on the real broker and store: counters right under chaos and restarts, one
close per parent by its policy, cancelled parents, the watchdog, debounced recounts."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from taskcore.adapters.mongo import Store, now_ms
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType
from taskcore.domain.evolve import fold
from taskcore.domain.status import TERMINAL, TaskStatus
from taskcore.domain.task import SubtaskCounts
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_aggregator.parent_policy import parent_outcome
from taskcore_aggregator.parents import count_statuses, mark_for_recount, refresh_parent
from taskcore_aggregator.projection import load_logs
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.retention import Retention
from taskcore_aggregator.watchdog import Watchdog

from .chaos import History, Scenario, chaotic, in_messages, publish
from .harness import projections, running_aggregator

FINAL_TYPES = {
    t.value
    for t in (
        EventType.COMPLETED,
        EventType.COMPLETED_WITH_ERRORS,
        EventType.FAILED,
        EventType.CANCELLED,
    )
}


def counts(**n: int) -> SubtaskCounts:
    return SubtaskCounts(total=sum(n.values()), **n)


@pytest.mark.parametrize(
    ("policy", "children", "cancelled", "threshold", "expected"),
    [
        ("collect_all", counts(completed=3), False, 0.5, EventType.COMPLETED),
        ("collect_all", counts(completed=2, failed=1), False, 0.5, EventType.COMPLETED_WITH_ERRORS),
        ("fail_fast", counts(completed=9, dead_letter=1), False, 0.5, EventType.FAILED),
        ("fail_fast", counts(completed=4), False, 0.5, EventType.COMPLETED),
        ("threshold", counts(completed=3, failed=1), False, 0.5, EventType.COMPLETED_WITH_ERRORS),
        ("threshold", counts(completed=2, failed=2), False, 0.5, EventType.COMPLETED_WITH_ERRORS),
        ("threshold", counts(completed=1, cancelled=3), False, 0.5, EventType.FAILED),
        ("threshold", counts(completed=9, failed=1), False, 0.05, EventType.FAILED),
        ("collect_all", counts(completed=3), True, 0.5, EventType.CANCELLED),
        ("threshold", counts(failed=3), True, 0.5, EventType.CANCELLED),
    ],
)
def test_a_parent_ends_by_its_policy(
    policy: str, children: SubtaskCounts, cancelled: bool, threshold: float, expected: EventType
) -> None:
    outcome = parent_outcome(policy, children, cancelled=cancelled, failure_threshold=threshold)
    assert outcome.type is expected
    assert (outcome.error is None) == (expected in (EventType.COMPLETED, EventType.CANCELLED))


def family(
    scenario: Scenario,
    rng: random.Random,
    kinds: list[str],
    *,
    policy: str = "collect_all",
    threshold: float | None = None,
) -> tuple[History, list[History]]:
    """A parent whose run spawned one child per kind, then awaits them."""
    parent = scenario.new_task(rng, kind="parent", policy=policy, threshold=threshold)
    parent.claim(1, progress=0)
    parent.add(EventType.AWAITING_CHILDREN, {"result": {"submitted": len(kinds)}})
    children = [scenario.new_task(rng, kind=k, parent=parent.task_id) for k in kinds]
    return parent, children


async def recount_from_log(store: Store, parent_id: str) -> SubtaskCounts:
    """The parent's counters as the log alone says: each child folded from its events."""
    query = {"type": "task.submitted", "data.parent_task_id": parent_id}
    child_ids = [d["task_id"] async for d in store.events.find(query, {"task_id": 1})]
    logs = await load_logs(store, child_ids)
    states = [fold(events) for events in logs.values()]
    return count_statuses(Counter(s.status for s in states if s is not None).items())


async def final_events(store: Store, parent_id: str) -> list[str]:
    query = {"task_id": parent_id, "type": {"$in": sorted(FINAL_TYPES)}}
    return [d["type"] async for d in store.events.find(query)]


async def wait_terminal(store: Store, task_ids: list[str], within: float = 60.0) -> None:
    async def all_terminal() -> bool:
        n = await store.tasks.count_documents(
            {"_id": {"$in": task_ids}, "status": {"$in": [s.value for s in TERMINAL]}}
        )
        return n == len(task_ids)

    await wait_for_async(all_terminal, timeout=within, interval=0.1, message="parents closed")


async def wait_counters_settled(store: Store, parent_ids: list[str], within: float = 30.0) -> None:
    async def settled() -> bool:
        for parent_id in parent_ids:
            doc = await store.tasks.find_one({"_id": parent_id}, {"subtasks": 1})
            stored = SubtaskCounts.model_validate((doc or {}).get("subtasks") or {})
            if stored != await recount_from_log(store, parent_id):
                return False
        return True

    await wait_for_async(settled, timeout=within, interval=0.1, message="counters settled")


async def test_counters_count_each_child_transition_once_and_each_parent_closes_once(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(11)
    scenario = Scenario()
    kinds = ["ok", "ok", "retry_ok", "dead", "cancelled", "replayed", "ok", "failed_child"] * 4
    collect, _ = family(scenario, rng, kinds)
    threshold, _ = family(scenario, rng, kinds, policy="threshold", threshold=0.1)
    fail_fast, _ = family(scenario, rng, ["ok"] * 20 + ["failed_child"], policy="fail_fast")
    clean, _ = family(scenario, rng, ["ok", "retry_ok"] * 10)
    await scenario.insert(store)
    parents = [collect.task_id, threshold.task_id, fail_fast.task_id, clean.task_id]
    stream = chaotic(scenario.events, rng, duplicates=0.4)
    messages = in_messages(stream, rng)
    half = len(messages) // 2
    # Given the events arrive duplicated and shuffled, and the aggregator restarts midway
    async with running_aggregator(settings):
        await publish(publisher, messages[:half])
        await wait_for_async(
            lambda: store.events.count_documents({}), timeout=20, message="some folded"
        )
    async with running_aggregator(settings):
        await publish(publisher, messages[half:])
        # When every child is terminal
        await wait_terminal(store, parents)
        # (a replayed child may be folded after its parent closed: counters follow it)
        await wait_counters_settled(store, parents)
        live = await projections(store)
    # Then each parent closed once, by its policy
    for parent_id in parents:
        assert len(await final_events(store, parent_id)) == 1
    assert live[collect.task_id].status is TaskStatus.COMPLETED_WITH_ERRORS
    assert live[threshold.task_id].status is TaskStatus.FAILED  # 12 of 32 did not complete: > 0.1
    assert live[fail_fast.task_id].status is TaskStatus.FAILED
    assert live[clean.task_id].status is TaskStatus.COMPLETED
    assert live[clean.task_id].result == {"submitted": 20}
    # and its counters equal a recount of its children from the log
    for parent_id in parents:
        assert live[parent_id].subtasks == await recount_from_log(store, parent_id)
        assert live[parent_id].subtasks.open == 0
    assert live[collect.task_id].subtasks == counts(completed=20, dead_letter=8, cancelled=4)


async def test_a_cancelled_parent_closes_as_cancelled_only_once_its_children_are_terminal(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(12)
    scenario = Scenario()
    parent, children = family(scenario, rng, ["ok", "cancelled", "running"])
    await scenario.insert(store)
    # Given a cancel was requested while a child still runs
    await store.tasks.update_one({"_id": parent.task_id}, {"$set": {"cancel_requested": True}})
    async with running_aggregator(settings):
        await publish(publisher, in_messages(scenario.events, rng))

        async def counted() -> SubtaskCounts | None:
            doc = await store.tasks.find_one({"_id": parent.task_id})
            sub = SubtaskCounts.model_validate((doc or {}).get("subtasks") or {})
            return sub if sub.total == 3 and sub.running == 1 else None

        await wait_for_async(counted, timeout=20, message="counters with one running")
        assert (await projections(store))[parent.task_id].status is TaskStatus.RUNNING
        # When the last child ends
        running = children[2]
        running.add(EventType.COMPLETED, {"result": {}})
        await publish(publisher, in_messages(running.events[-1:], rng))
        # Then the parent closes as CANCELLED, whatever its children did
        await wait_terminal(store, [parent.task_id])
    live = (await projections(store))[parent.task_id]
    assert live.status is TaskStatus.CANCELLED
    assert live.subtasks == counts(completed=2, cancelled=1)
    assert await final_events(store, parent.task_id) == ["task.cancelled"]


async def test_the_watchdog_closes_a_parent_left_open_once_even_from_two_replicas(
    store: Store, publisher: Publisher
) -> None:
    rng = random.Random(13)
    scenario = Scenario()
    parent, _ = family(scenario, rng, ["ok", "dead", "ok"])
    await scenario.insert(store)
    # Given every event folded by an aggregator that died before recounting the parent
    result = await Projector(store, Retention(timedelta(days=1))).fold_batch(scenario.events)
    assert not result.unfoldable
    doc = await store.tasks.find_one({"_id": parent.task_id})
    assert doc is not None
    assert doc["awaiting_children"]
    assert not doc.get("children_settled")
    # When two watchdogs sweep at once
    watchdogs = [Watchdog(store, publisher, interval_s=1, stale_s=0) for _ in range(2)]
    closed = await asyncio.gather(*(w.sweep() for w in watchdogs))
    # Then exactly one of them closed it, with the final event in its outbox
    assert sum(closed) == 1
    doc = await store.tasks.find_one({"_id": parent.task_id})
    assert doc is not None
    assert doc["children_settled"]
    entries = list((doc.get("outbox") or {}).values())
    assert [e["event"]["type"] for e in entries] == ["task.completed_with_errors"]
    assert SubtaskCounts.model_validate(doc["subtasks"]) == counts(completed=2, dead_letter=1)
    # and a later sweep does nothing more
    assert await watchdogs[0].sweep() == 0


async def test_a_parent_closes_with_the_counts_it_closed_on_even_if_an_older_recount_won(
    store: Store, publisher: Publisher
) -> None:
    rng = random.Random(17)
    scenario = Scenario()
    parent, _ = family(scenario, rng, ["ok", "dead", "ok"])
    await scenario.insert(store)
    await Projector(store, Retention(timedelta(days=1))).fold_batch(scenario.events)
    # Given a recount that read the same mark before the last child finished got its
    # (now stale) counts stored first
    await mark_for_recount(store, [parent.task_id])
    await store.tasks.update_one(
        {"_id": parent.task_id},
        {"$set": {"subtasks_counted": 1, "subtasks": counts(completed=1, running=1).model_dump()}},
    )
    # When the fresher recount of that mark closes the parent
    assert await refresh_parent(store, publisher, parent.task_id)
    # Then the parent shows the counts of its final event, not the stale ones
    doc = await store.tasks.find_one({"_id": parent.task_id})
    assert doc is not None
    [entry] = (doc.get("outbox") or {}).values()
    closed_on = SubtaskCounts.model_validate(entry["event"]["data"]["subtasks"])
    assert closed_on == counts(completed=2, dead_letter=1)
    assert SubtaskCounts.model_validate(doc["subtasks"]) == closed_on


async def test_the_watchdog_recounts_a_parent_whose_recount_was_lost(
    store: Store, publisher: Publisher
) -> None:
    rng = random.Random(14)
    scenario = Scenario()
    parent, _ = family(scenario, rng, ["ok", "ok"])
    parent.events.pop()  # still running: only counters are at stake
    await scenario.insert(store)
    await Projector(store, Retention(timedelta(days=1))).fold_batch(scenario.events)
    # Given a batch marked the parent and its replica died before the recount
    await mark_for_recount(store, [parent.task_id])
    await store.tasks.update_one(
        {"_id": parent.task_id}, {"$set": {"subtasks_marked_ms": now_ms() - 60_000}}
    )
    watchdog = Watchdog(store, publisher, interval_s=1, stale_s=10)
    # When the watchdog sweeps, then the counters are recounted and the stamp is cleared
    assert await watchdog.sweep() == 0
    doc = await store.tasks.find_one({"_id": parent.task_id})
    assert doc is not None
    assert SubtaskCounts.model_validate(doc["subtasks"]) == counts(completed=2)
    assert "subtasks_marked_ms" not in doc
    assert doc["subtasks_counted"] == doc["subtasks_marked"] == 1


async def test_a_big_fan_out_costs_a_few_debounced_recounts_not_one_per_child(
    settings: Settings, store: Store, publisher: Publisher
) -> None:
    rng = random.Random(15)
    scenario = Scenario()
    parent, children = family(scenario, rng, ["ok"] * 1500)
    await scenario.insert(store)
    for child in children:
        del child.events[2:-1]  # submitted, started, completed
    messages = in_messages([e for h in scenario.histories.values() for e in h.events], rng, 3)
    interval = 0.25
    async with running_aggregator(
        settings, fold_batch_size=60, parent_recount_interval_seconds=interval
    ) as aggregator:
        started = time.monotonic()
        await publish(publisher, messages)
        await wait_terminal(store, [parent.task_id], within=90)
        elapsed = time.monotonic() - started
        recounts = aggregator.parents.recounts
    live = (await projections(store))[parent.task_id]
    assert live.status is TaskStatus.COMPLETED
    assert live.subtasks == counts(completed=1500)
    print(f"1500 children folded in {elapsed:.1f}s with {recounts} parent recounts")
    assert recounts <= elapsed / interval + 5
    assert recounts < 150


def oldest_quiet_gauge() -> float | None:
    return REGISTRY.get_sample_value("taskcore_parents_awaiting_children_oldest_seconds")


async def test_the_watchdog_reports_how_long_the_quietest_waiting_parent_went_unchanged(
    store: Store, publisher: Publisher
) -> None:
    rng = random.Random(16)
    scenario = Scenario()
    parent, _ = family(scenario, rng, ["ok", "running"])
    await scenario.insert(store)
    await Projector(store, Retention(timedelta(days=1))).fold_batch(scenario.events)
    watchdog = Watchdog(store, publisher, interval_s=1, stale_s=10)
    # Given a parent that has waited since its (long past) awaiting_children, uncounted
    await watchdog.sweep()
    assert (oldest_quiet_gauge() or 0) > 3600
    # When the sweep has counted its children (a change), the parent is no longer quiet
    await watchdog.sweep()
    assert (await projections(store))[parent.task_id].subtasks == counts(completed=1, running=1)
    assert (oldest_quiet_gauge() or 99) < 60
