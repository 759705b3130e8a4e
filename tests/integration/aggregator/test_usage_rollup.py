"""Usage through the real aggregator: every call of every attempt counted once, whatever
is redelivered and in whatever order; a parent's usage is the sum of its whole subtree's,
at every level; the ledger holds one row per call; and ``taskcore rebuild`` computes the
same, and restores what was lost."""

from __future__ import annotations

import random
from typing import Any

from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.domain.events import EventType
from taskcore.domain.usage import Usage, UsageRecorded, combined
from taskcore.settings import Settings
from taskcore.testing import wait_for_async
from taskcore_aggregator.rebuild import rebuild
from taskcore_aggregator.usage_rollup import total_of

from .chaos import History, Scenario, chaotic, in_messages, publish
from .harness import running_aggregator


def call_data(task: History, provider: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": f"{provider}-1",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_nanos": 3 * prompt + 7 * completion,
        "currency": "USD",
        "user_id": "alice",
        "team_id": None,
        "task_type": "diag.noop",
        "tier": "paid",
        "attempt": 1,
    }


def leaf(scenario: Scenario, rng: random.Random, parent: History) -> History:
    """A child whose first attempt makes a call and fails, and whose second makes two."""
    h = scenario.new_task(rng, parent=parent.task_id)
    h.claim(1, 0)
    h.add(EventType.USAGE_RECORDED, call_data(h, "openai", rng.randint(1, 99), 5))
    h.add(EventType.RETRYING, {"error": {"type": "E", "message": "x"}, "retry_count": 1})
    h.claim(2, 0)
    h.add(EventType.USAGE_RECORDED, call_data(h, "openai", rng.randint(1, 99), 3))
    h.add(EventType.USAGE_RECORDED, call_data(h, "offline", 10, 10))
    h.add(EventType.COMPLETED, {"result": {}})
    return h


def parent(scenario: Scenario, rng: random.Random, of: History | None = None) -> History:
    h = scenario.new_task(rng, kind="parent", parent=of.task_id if of else None)
    h.claim(1, 0)
    scenario.docs[-1]["exec"]["has_children"] = True
    return h


def tree(rng: random.Random) -> tuple[Scenario, History, list[History], dict[str, list[History]]]:
    """A root whose run makes a call, two child parents, two leaves under each."""
    scenario = Scenario()
    root = parent(scenario, rng)
    root.add(EventType.USAGE_RECORDED, call_data(root, "openai", 50, 50))
    middles = [parent(scenario, rng, root) for _ in range(2)]
    leaves = {m.task_id: [leaf(scenario, rng, m) for _ in range(2)] for m in middles}
    for h in [root, *middles]:
        h.add(EventType.AWAITING_CHILDREN, {"result": None})
    return scenario, root, middles, leaves


def usage_of(history: History) -> Usage | None:
    calls = [
        Usage.of_call(UsageRecorded.model_validate(e.data))
        for e in history.events
        if e.type is EventType.USAGE_RECORDED
    ]
    return combined(*calls)


async def totals(store: Store) -> dict[str, Usage | None]:
    return {d["_id"]: total_of(d) async for d in store.tasks.find({})}


async def test_a_parents_usage_is_its_subtrees_sum_at_every_level_whatever_the_delivery(
    store: Store, publisher: Publisher, settings: Settings
) -> None:
    rng = random.Random(14)
    scenario, root, middles, leaves = tree(rng)
    await scenario.insert(store)
    expected: dict[str, Usage | None] = {}
    for middle in middles:
        own = [usage_of(child) for child in leaves[middle.task_id]]
        expected[middle.task_id] = combined(*own)
    expected[root.task_id] = combined(usage_of(root), *expected.values())
    for children in leaves.values():
        expected.update({child.task_id: usage_of(child) for child in children})
    calls = sum(e.type is EventType.USAGE_RECORDED for e in scenario.events)

    async with running_aggregator(settings):
        await publish(publisher, in_messages(chaotic(scenario.events, rng), rng))

        async def rolled_up() -> bool:
            return await totals(store) == expected

        await wait_for_async(rolled_up, timeout=60, interval=0.2, message="usage rolled up")

        async def rebuild_agrees() -> bool:  # counters and parents' closes settle too
            return (await rebuild(store, check=True)).clean

        await wait_for_async(rebuild_agrees, timeout=60, interval=0.2, message="rebuild clean")

    usage = expected[root.task_id]
    assert usage is not None
    assert usage.calls == calls
    assert usage.by_provider["offline"].calls == 4
    assert await store.usage.count_documents({}) == calls


async def test_rebuild_restores_lost_usage_and_ledger_rows_to_what_live_folding_made(
    store: Store, publisher: Publisher, settings: Settings
) -> None:
    rng = random.Random(41)
    scenario, root, middles, _ = tree(rng)
    await scenario.insert(store)
    async with running_aggregator(settings):
        await publish(publisher, in_messages(scenario.events, rng))

        async def settled() -> dict[str, Usage | None]:
            live = await totals(store)
            root_usage = live.get(root.task_id)
            return live if root_usage is not None and root_usage.calls == 13 else {}

        live = await wait_for_async(settled, timeout=60, interval=0.2, message="usage folded")

        async def rebuild_agrees() -> bool:
            return (await rebuild(store, check=True)).clean

        await wait_for_async(rebuild_agrees, timeout=60, interval=0.2, message="rebuild clean")
    live_rows = await store.usage.find({}).sort("_id").to_list(None)

    await store.usage.delete_many({"task_id": {"$ne": root.task_id}})
    await store.tasks.update_many({}, {"$set": {"descendant_usage": None}})
    damaged = await rebuild(store, check=True)
    assert sorted(damaged.usage_differing) == sorted([root.task_id, *(m.task_id for m in middles)])
    assert damaged.ledger_differing == 12

    await rebuild(store)

    assert await totals(store) == live
    assert await store.usage.find({}).sort("_id").to_list(None) == live_rows
    assert (await rebuild(store, check=True)).clean


async def test_a_call_deep_in_a_running_tree_reaches_the_root_at_once(
    store: Store, publisher: Publisher, settings: Settings
) -> None:
    # Nothing closes here, and no parent awaits its children yet, so no later fold or
    # watchdog sweep would carry the call up: the roll-up itself must climb.
    rng = random.Random(7)
    scenario = Scenario()
    root = parent(scenario, rng)
    middle = parent(scenario, rng, root)
    running = scenario.new_task(rng, parent=middle.task_id)
    running.claim(1, 0)
    await scenario.insert(store)

    async with running_aggregator(settings):
        await publish(publisher, in_messages(scenario.events, rng))

        async def started() -> bool:
            return await store.tasks.count_documents({"status": "RUNNING"}) == 3

        await wait_for_async(started, timeout=30, interval=0.1, message="the tree running")
        call = running.add(EventType.USAGE_RECORDED, call_data(running, "openai", 20, 2))
        await publish(publisher, in_messages([call], rng))

        async def reached_the_root() -> bool:
            return (await totals(store)).get(root.task_id) == usage_of(running)

        await wait_for_async(reached_the_root, timeout=30, interval=0.1, message="root usage")
