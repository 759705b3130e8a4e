"""Aggregator replicas folding the same tasks at once, in-process on the real store: five
projectors, each with its own memory of documents, get duplicated and shuffled batches
of the same histories; once all are folded, every projection is the fold of its log.

This found a lost correction: a fold that changed nothing skipped its write, while a
concurrent fold from the same revision, whose log read had missed the events just
appended, wrote a projection without them (a replayed task kept its old retry_count).
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from taskcore.adapters.mongo import Store
from taskcore.domain.task import Task
from taskcore_aggregator.projection import state_of
from taskcore_aggregator.projector import Projector
from taskcore_aggregator.retention import Retention

from .chaos import Scenario, chaotic

KINDS = ["replayed", "replayed", "dead", "retry_ok", "ok", "cancelled", "running"]
IGNORED = {"updated_at", "progress", "subtasks", "version"}


def _comparable(task: Task) -> dict[str, object]:
    return task.model_dump(exclude=IGNORED)


async def test_a_fold_that_changes_nothing_still_overrides_a_concurrent_stale_one(
    store: Store,
) -> None:
    # The interleaving the randomised test below found, step by step.
    scenario = Scenario()
    h = scenario.new_task(random.Random(5), kind="replayed")
    await scenario.insert(store)
    by_type = {e.type.value: e for e in h.events}
    retrying, dead = by_type["task.retrying"], by_type["task.dead_lettered"]
    first, second = (Projector(store, Retention(timedelta(days=1))) for _ in range(2))
    # Given one replica that folded everything but the retry and the dead letter: its
    # projection (remembered) happens to end with retry_count 0
    await first.fold_batch([e for e in h.events if e not in (retrying, dead)])
    # and another that folded the retry from a log still missing the dead letter, which
    # left the replay unapplied (a replay reopens only a dead letter): retry_count 1
    await second.fold_batch([retrying])
    # When the first folds the dead letter: the whole log folds to what it remembers
    await first.fold_batch([dead])
    # Then its fold still writes, finds the other's projection, and corrects it
    doc = await store.documents.get(h.task_id)
    assert doc is not None
    task = state_of(doc)
    expected = scenario.expected()[h.task_id]
    assert task is not None
    assert _comparable(task) == _comparable(expected)
    assert task.retry_count == 0


@pytest.mark.parametrize("seed", range(8))
async def test_replicas_folding_the_same_tasks_at_once_end_at_the_fold_of_the_log(
    store: Store, seed: int
) -> None:
    rng = random.Random(seed)
    scenario = Scenario()
    for _ in range(30):
        scenario.new_task(rng, kind=rng.choice(KINDS))
    await scenario.insert(store)
    replicas = [Projector(store, Retention(timedelta(days=1))) for _ in range(5)]
    stream = chaotic(scenario.events, rng)
    dealt: list[list[list[object]]] = [[] for _ in replicas]
    start = 0
    while start < len(stream):
        size = rng.randint(1, 5)
        dealt[rng.randrange(len(replicas))].append(stream[start : start + size])
        start += size

    async def fold_all(projector: Projector, batches: list[list[object]]) -> None:
        for batch in batches:
            await projector.fold_batch(batch)  # type: ignore[arg-type]
            await asyncio.sleep(rng.random() * 0.003)  # interleave the replicas

    await asyncio.gather(*(fold_all(p, b) for p, b in zip(replicas, dealt, strict=True)))

    expected = {t: _comparable(s) for t, s in scenario.expected().items()}
    stored = {
        d["_id"]: _comparable(task)
        async for d in store.tasks.find({})
        if (task := state_of(d)) is not None
    }
    differing = {t: (stored.get(t), e) for t, e in expected.items() if stored.get(t) != e}
    assert not differing, differing
