"""Which finished task trees retention removes: a pure decision over task records.

A tree (a root task and every task below it) is removed once its root has been finished
for its status's retention: ``TASKCORE_RETENTION_DAYS`` (30) after COMPLETED or
CANCELLED, ``TASKCORE_RETENTION_DAYS_FAILED`` (90) after FAILED, DEAD_LETTER or
COMPLETED_WITH_ERRORS. Nothing unfinished is ever removed: a tree with any member that
is not finished (by its status and by its document) is kept whole, whatever its root's
age. Subtasks never go on their own: they go with their root.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from taskcore.domain.status import TaskStatus

DAY = timedelta(days=1)
FAILED_LIKE = frozenset(
    {TaskStatus.FAILED, TaskStatus.DEAD_LETTER, TaskStatus.COMPLETED_WITH_ERRORS}
)


@dataclass(frozen=True)
class TaskRecord:
    """What retention reads of one task."""

    id: str
    root_id: str
    parent_id: str | None
    status: TaskStatus
    finished_ms: int | None  # when it finished, as folded (None: not finished)
    settled: bool = True  # its document says its run is over for good

    @property
    def finished(self) -> bool:
        return self.status.is_terminal and self.settled and self.finished_ms is not None


@dataclass(frozen=True)
class RetentionPolicy:
    done: timedelta
    failed: timedelta

    @classmethod
    def of_days(cls, done_days: float, failed_days: float) -> RetentionPolicy:
        return cls(done_days * DAY, failed_days * DAY)

    def keep_for(self, status: TaskStatus) -> timedelta | None:
        """How long a finished root with this status is kept (None: not finished)."""
        if not status.is_terminal:
            return None
        return self.failed if status in FAILED_LIKE else self.done

    def groups(self) -> list[tuple[list[TaskStatus], timedelta]]:
        """The terminal statuses by how long they are kept."""
        done = [s for s in TaskStatus if s.is_terminal and s not in FAILED_LIKE]
        return [(done, self.done), (sorted(FAILED_LIKE), self.failed)]

    def expired(self, root: TaskRecord, now_ms: int) -> bool:
        """Whether a root task has been finished longer than its status is kept."""
        keep = self.keep_for(root.status)
        if root.parent_id is not None or keep is None or not root.finished:
            return False
        assert root.finished_ms is not None
        return root.finished_ms <= now_ms - keep // timedelta(milliseconds=1)


def removable_trees(policy: RetentionPolicy, tasks: Iterable[TaskRecord], now_ms: int) -> list[str]:
    """The root ids of the trees to remove: the root expired, every member finished."""
    trees: dict[str, list[TaskRecord]] = defaultdict(list)
    for task in tasks:
        trees[task.root_id].append(task)
    removable = []
    for root_id, members in trees.items():
        root = next((t for t in members if t.id == root_id), None)
        if root is None or not policy.expired(root, now_ms):
            continue
        if all(t.finished for t in members):
            removable.append(root_id)
    return sorted(removable)
