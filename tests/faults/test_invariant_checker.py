"""The invariant checker on hand-made states: silent on a consistent run, and naming each
broken guarantee (so a fault run that breaks one cannot pass)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from cloudevents.core.v1.event import CloudEvent
from taskcore.adapters.mongo import Store, event_to_doc, projection_of
from taskcore.domain.events import EventType
from taskcore.domain.evolve import fold
from taskcore.messages.cloudevents import is_external, to_cloudevent
from taskcore_aggregator.projection import fold_from

from tests.faults.invariants import (
    Expected,
    check,
    check_dead_letters,
    check_log,
    check_received,
    check_tasks,
    observe,
)
from tests.integration.aggregator.chaos import Scenario, error


@dataclass
class Made:
    scenario: Scenario
    expected: Expected
    received: list[CloudEvent]
    ok: str
    dead: str
    dead_lettered: str  # the event id of the dead task's terminal event


@pytest.fixture
async def made(store: Store) -> Made:
    """Two completed tasks and a dead-lettered one, stored as the services would leave them,
    and the CloudEvents a subscriber got for them."""
    rng = random.Random(5)
    scenario = Scenario()
    ok = scenario.new_task(rng, kind="ok")
    scenario.new_task(rng, kind="ok")
    dead = scenario.new_task(rng)
    dead.claim(1, 0)
    dead_lettered = dead.add(
        EventType.DEAD_LETTERED,
        {"error": error("no", retryable=False), "dead_letter_id": f"{dead.task_id}:1"},
    )
    await scenario.insert(store)
    for task_id, task in scenario.expected().items():
        await store.tasks.update_one(
            {"_id": task_id}, {"$set": projection_of(task), "$unset": {"outbox": ""}}
        )
    await store.events.insert_many([event_to_doc(e) for e in scenario.events])
    await store.dead_letters.insert_one({"_id": f"{dead.task_id}:1", "reason": "non_retryable"})
    received = [
        to_cloudevent(item)
        for h in scenario.histories.values()
        for item in fold_from(None, h.events)[1]
        if is_external(item.event.type)
    ]
    statuses = {t: fold(h.events).status.value for t, h in scenario.histories.items()}  # type: ignore[union-attr]
    expected = Expected(statuses, {}, frozenset({f"{dead.task_id}:1"}))
    return Made(scenario, expected, received, ok.task_id, dead.task_id, dead_lettered.event_id)


async def test_a_consistent_run_passes_every_check(
    store: Store, made: Made, mongo_url: str
) -> None:
    assert await check(store, made.expected, made.received, [], mongo_url=mongo_url) == []


async def test_a_second_completion_is_named(store: Store, made: Made) -> None:
    again = made.scenario.histories[made.ok].add(EventType.COMPLETED, {"result": {}})
    await store.events.insert_one(event_to_doc(again))
    problems = check_log(await observe(store))
    assert problems[0] == (
        f"1 tasks completed more than once (task, task.completed events), e.g. [('{made.ok}', 2)]"
    )


async def test_a_lost_terminal_cloudevent_is_named(store: Store, made: Made) -> None:
    received = [e for e in made.received if e.get_id() != made.dead_lettered]
    assert len(received) == len(made.received) - 1
    [problem] = check_received(await observe(store), received, [])
    assert problem == (
        "1 tasks whose terminal CloudEvents differ from the log (task, logged, got), "
        f"e.g. [('{made.dead}', ['{made.dead_lettered}'], [])]"
    )


async def test_an_unexpected_dead_letter_is_named(store: Store, made: Made) -> None:
    await store.dead_letters.insert_one({"_id": f"{made.ok}:1", "reason": "attempts_exhausted"})
    [problem] = check_dead_letters(await observe(store), made.expected)
    assert problem == (
        f"1 unexpected dead letters (id, reason), e.g. [('{made.ok}:1', 'attempts_exhausted')]"
    )


async def test_a_missing_task_is_named(store: Store, made: Made) -> None:
    await store.tasks.delete_one({"_id": made.ok})
    [problem] = check_tasks(await observe(store), made.expected)
    assert problem == f"1 expected tasks are missing, e.g. ['{made.ok}']"


async def test_a_projection_unlike_its_log_is_named_by_the_rebuild_too(
    store: Store, made: Made, mongo_url: str
) -> None:
    await store.tasks.update_one({"_id": made.ok}, {"$set": {"status": "RUNNING"}})
    problems = await check(store, made.expected, made.received, [], mongo_url=mongo_url)
    assert (
        "1 tasks not in the status they must end in (task, status, expected), "
        f"e.g. [('{made.ok}', 'RUNNING', 'COMPLETED')]"
    ) in problems
    assert any(p.startswith("taskcore rebuild --check exited 1") for p in problems), problems


def test_the_time_check_names_an_early_start_and_a_doubled_due_time() -> None:
    from datetime import UTC, datetime, timedelta

    from tests.faults.invariants import Observed, check_time

    due = datetime(2030, 1, 1, 0, 0, 2, tzinfo=UTC)
    early = {"_id": "early", "scheduled_for": due}
    runs = [{"_id": f"run{i}", "scheduled_for": due, "schedule_id": "s"} for i in (1, 2)]
    observed = Observed(
        tasks={d["_id"]: d for d in [early, *runs]},
        events={"early": [{"type": "task.started", "occurred_at": due - timedelta(seconds=1)}]},
        dead_letters={},
    )
    problems = check_time(observed, "s")
    assert len(problems) == 2
    assert "started before their time" in problems[0]
    assert "more than one task" in problems[1]
    fine = Observed(tasks={"run1": runs[0]}, events={}, dead_letters={})
    assert check_time(fine, "s") == []
