"""Retention's selection: exactly the expired finished trees, never anything unfinished."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from taskcore.domain.status import TaskStatus
from taskcore.retention import RetentionPolicy, TaskRecord, removable_trees
from taskcore.retention.policy import FAILED_LIKE

DAY_MS = 86_400_000
NOW = 1_000 * DAY_MS
POLICY = RetentionPolicy.of_days(30, 90)


@st.composite
def forests(draw: st.DrawFn) -> list[TaskRecord]:
    """Roots with random subtrees: random statuses, finish times (0-120 days ago, or
    none), and documents that may not agree yet that the run is over."""
    tasks: list[TaskRecord] = []
    for r in range(draw(st.integers(0, 8))):
        root_id = f"r{r}"
        ids = [root_id]
        for c in range(draw(st.integers(0, 5))):
            ids.append(f"{root_id}c{c}")
        for i, task_id in enumerate(ids):
            status = draw(st.sampled_from(list(TaskStatus)))
            age_days = draw(st.one_of(st.none(), st.floats(0, 120)))
            finished_ms = None if age_days is None else NOW - int(age_days * DAY_MS)
            parent = None if i == 0 else draw(st.sampled_from(ids[:i]))
            tasks.append(
                TaskRecord(task_id, root_id, parent, status, finished_ms, draw(st.booleans()))
            )
    return tasks


def expected(tasks: list[TaskRecord]) -> set[str]:
    """The rule, stated plainly: the root finished longer ago than its status is kept,
    and nothing in its tree unfinished."""
    chosen = set()
    for root in (t for t in tasks if t.parent_id is None):
        tree = [t for t in tasks if t.root_id == root.id]
        keep_days = 90 if root.status in FAILED_LIKE else 30
        old_enough = root.finished_ms is not None and NOW - root.finished_ms >= keep_days * DAY_MS
        all_over = all(
            t.status.is_terminal and t.settled and t.finished_ms is not None for t in tree
        )
        if root.status.is_terminal and old_enough and all_over:
            chosen.add(root.id)
    return chosen


@given(forests())
def test_retention_selects_exactly_the_expired_finished_trees(tasks: list[TaskRecord]) -> None:
    assert set(removable_trees(POLICY, tasks, NOW)) == expected(tasks)


@given(forests())
def test_nothing_unfinished_is_ever_selected(tasks: list[TaskRecord]) -> None:
    selected = set(removable_trees(POLICY, tasks, NOW))
    for task in tasks:
        if task.root_id in selected:
            assert task.status.is_terminal
            assert task.settled


def test_a_failed_tree_is_kept_longer_than_a_completed_one() -> None:
    def root(status: TaskStatus, days: float) -> TaskRecord:
        return TaskRecord(
            f"{status}-{days}", f"{status}-{days}", None, status, NOW - int(days * DAY_MS)
        )

    tasks = [
        root(s, d) for s in (TaskStatus.COMPLETED, TaskStatus.DEAD_LETTER) for d in (31, 89, 91)
    ]
    assert removable_trees(POLICY, tasks, NOW) == sorted(
        ["COMPLETED-31", "COMPLETED-89", "COMPLETED-91", "DEAD_LETTER-91"]
    )
    assert POLICY.keep_for(TaskStatus.RUNNING) is None
    assert POLICY.keep_for(TaskStatus.FAILED) == timedelta(days=90)
