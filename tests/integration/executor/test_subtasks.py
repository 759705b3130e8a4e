"""Subtasks: the same dispatch path as the API, one child per key whatever is re-run, and
the parent's policy (collect all, fail fast with sibling cancellation)."""

from __future__ import annotations

from taskcore.usage.budgets import Budgets, BudgetsConfig

from tests.integration.executor.harness import System


async def _children(system: System, parent: str) -> list[dict[str, object]]:
    return await system.store.tasks.find({"parent_task_id": parent}).to_list(None)


async def test_a_re_run_parent_never_creates_its_children_twice(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    # Given a parent that creates 5 children, then fails (retryably) on its first attempt
    parent = await system.submit("test.parent", {"count": 5, "fail_first_attempt": True})

    task = await system.wait_status(parent, "COMPLETED", within_s=20)
    # then its second attempt created the same 5 children, not 5 more
    assert task["attempts"] == 2
    children = await _children(system, parent)
    assert len(children) == 5
    assert task["subtasks"]["total"] == 5
    assert task["subtasks"]["completed"] == 5
    ids = [str(c["_id"]) for c in children]
    assert set((await system.completions(ids)).values()) == {1}
    for child in children:
        assert child["root_task_id"] == parent
        assert len(await system.events(str(child["_id"]), "task.submitted")) == 1


async def test_collect_all_parent_completes_with_errors_once_every_child_is_terminal(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor()
    parent = await system.submit("test.parent", {"count": 3, "failing": 1})

    task = await system.wait_status(parent, "COMPLETED_WITH_ERRORS", within_s=20)
    assert task["subtasks"]["total"] == 4
    assert task["subtasks"]["completed"] == 3
    assert task["subtasks"]["dead_letter"] == 1


async def test_fail_fast_parent_cancels_open_siblings_and_fails(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    # Given a fail-fast parent: one child fails at once, four would sleep a minute
    parent = await system.submit(
        "test.parent_fail_fast",
        {"count": 4, "failing": 1, "child_type": "diag.sleep", "child_parameters": {"seconds": 60}},
    )

    # then the failure cancels the sleeping siblings, and the parent FAILS, well before
    # any sibling could have finished its minute
    task = await system.wait_status(parent, "FAILED", within_s=20)
    assert task["subtasks"]["dead_letter"] == 1
    assert task["subtasks"]["cancelled"] == 4
    for child in await _children(system, parent):
        if child["task_type"] == "diag.sleep":
            assert child["status"] == "CANCELLED"
            assert await system.events(str(child["_id"]), "task.completed") == []


async def test_diag_fanout_completes_when_all_its_children_have(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    parent = await system.submit("diag.fanout", {"count": 25})

    task = await system.wait_status(parent, "COMPLETED", within_s=30)
    assert task["subtasks"]["total"] == 25
    assert task["subtasks"]["completed"] == 25
    children = [str(c["_id"]) for c in await _children(system, parent)]
    assert set((await system.completions(children)).values()) == {1}


async def test_diag_fanout_of_failing_children_completes_with_errors(system: System) -> None:
    await system.start_aggregator()
    await system.start_executor()
    parent = await system.submit(
        "diag.fanout",
        {"count": 4, "child_type": "diag.fail", "child_parameters": {"retryable": False}},
    )
    task = await system.wait_status(parent, "COMPLETED_WITH_ERRORS", within_s=20)
    assert task["subtasks"]["dead_letter"] == 4


async def test_a_subtask_of_an_unknown_type_fails_the_parent_without_retries(
    system: System,
) -> None:
    await system.start_aggregator()
    await system.start_executor()
    parent = await system.submit("test.parent", {"count": 2, "child_type": "no.such.type"})
    task = await system.wait_status(parent, "DEAD_LETTER")
    assert task["attempts"] == 1
    assert "unknown subtask type" in task["error"]["message"]
    assert await _children(system, parent) == []


async def test_a_parent_whose_submitter_has_spent_their_budget_creates_no_children(
    system: System,
) -> None:
    config = BudgetsConfig.parse({"users": {"carol": {"daily_tokens": 100}}})
    budgets = Budgets(system.store.budgets, system.store.usage, config)
    await budgets.reserve("carol", "paid", 100, 0)  # carol's day is spent
    await system.start_aggregator()
    await system.start_executor(budgets=config)

    carols = await system.submit("test.parent", {"count": 3}, user_id="carol")
    alices = await system.submit("test.parent", {"count": 3})  # no budget of hers is spent

    task = await system.wait_status(carols, "DEAD_LETTER", within_s=20)
    assert task["error"]["type"] == "BudgetExceeded"
    assert "daily tokens" in task["error"]["message"]
    assert await _children(system, carols) == []
    await system.wait_status(alices, "COMPLETED", within_s=20)
    assert len(await _children(system, alices)) == 3
