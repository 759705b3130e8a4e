"""Retention on the real store: it removes exactly the expired finished trees, with their
event logs and dead letters, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskcore import metrics
from taskcore.adapters.mongo import Store, event_to_doc
from taskcore.domain.events import EventType, TaskEvent
from taskcore.retention import RetentionPolicy, RetentionSweeper
from taskcore.submission import NewTask, submit_tasks
from taskcore.taskdoc.state import FINISHED

NOW = datetime(2030, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)


async def tree(
    store: Store,
    root_id: str,
    status: str,
    finished_days_ago: float | None,
    *,
    children: int = 0,
    open_child: bool = False,
) -> list[str]:
    """A root with children, stored as the fold would leave them, each with two logged
    events and a dead letter."""
    news = [NewTask(user_id="alice", task_type="diag.noop", parameters={}, task_id=root_id)]
    news += [
        NewTask(
            user_id="alice",
            task_type="diag.noop",
            parameters={},
            task_id=f"{root_id}-c{i}",
            parent_task_id=root_id,
            root_task_id=root_id,
        )
        for i in range(children)
    ]
    await submit_tasks(store, _NoPublish(), news)  # type: ignore[arg-type]
    ids = [n.task_id for n in news]
    for i, task_id in enumerate(ids):
        unfinished = finished_days_ago is None or (open_child and i == len(ids) - 1)
        fields = (
            {"status": "RUNNING", "finished_ms": None}
            if unfinished
            else {
                "status": status if i == 0 else "COMPLETED",
                "finished_ms": int((NOW - finished_days_ago * DAY).timestamp() * 1000),
                FINISHED: True,
            }
        )
        await store.tasks.update_one({"_id": task_id}, {"$set": fields})
        for sequence in (1, 2):
            event = TaskEvent(
                event_id=f"{task_id}:{sequence}",
                task_id=task_id,
                sequence=sequence,
                type=EventType.SUBMITTED if sequence == 1 else EventType.STARTED,
                occurred_at=NOW,
            )
            await store.events.insert_one(event_to_doc(event))
        await store.dead_letters.insert_one({"_id": f"{task_id}:1", "task_id": task_id})
    return ids


class _NoPublish:
    """Submitting without a broker: the outbox keeps the messages (not needed here)."""

    async def publish(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("no broker in this test")

    async def publish_events(self, *args: object, **kwargs: object) -> None:
        raise ConnectionError("no broker in this test")


async def ids_in(store: Store) -> tuple[set[str], set[str], set[str]]:
    tasks = {d["_id"] async for d in store.tasks.find({}, {"_id": 1})}
    events = {d["task_id"] async for d in store.events.find({}, {"task_id": 1})}
    dead = {d["task_id"] async for d in store.dead_letters.find({}, {"task_id": 1})}
    return tasks, events, dead


async def test_retention_removes_exactly_the_expired_finished_trees(store: Store) -> None:
    gone = [
        *await tree(store, "done-31d", "COMPLETED", 31, children=3),
        *await tree(store, "cancelled-40d", "CANCELLED", 40),
        *await tree(store, "dead-91d", "DEAD_LETTER", 91, children=2),
    ]
    kept = [
        *await tree(store, "done-29d", "COMPLETED", 29, children=2),
        *await tree(store, "failed-60d", "FAILED", 60),
        *await tree(store, "partial-60d", "COMPLETED_WITH_ERRORS", 89, children=1),
        *await tree(store, "running", "RUNNING", None, children=2),
        # An old finished root whose tree still has an unfinished member: kept whole.
        *await tree(store, "old-open-child", "COMPLETED", 100, children=2, open_child=True),
    ]
    removed_before = metrics.RETENTION_REMOVED.labels("tasks")._value.get()
    sweeper = RetentionSweeper(
        store,
        RetentionPolicy.of_days(30, 90),
        interval_s=60,
        batch=2,  # several bounded passes
        clock=lambda: int(NOW.timestamp() * 1000),
    )

    removed = await sweeper.sweep()

    assert removed == 3
    tasks, events, dead = await ids_in(store)
    assert tasks == set(kept)
    assert events == set(kept)
    assert dead == set(kept)
    assert metrics.RETENTION_REMOVED.labels("tasks")._value.get() - removed_before == len(gone)
    assert await sweeper.sweep() == 0  # nothing more: the kept trees stay


async def test_finished_tasks_folded_before_the_upgrade_get_their_finish_time(
    store: Store,
) -> None:
    await tree(store, "legacy", "COMPLETED", 45)
    finished_at = NOW - 45 * DAY
    await store.tasks.update_one(
        {"_id": "legacy"},
        {"$unset": {"finished_ms": ""}, "$set": {"finished_at": finished_at.isoformat()}},
    )
    sweeper = RetentionSweeper(
        store,
        RetentionPolicy.of_days(30, 90),
        interval_s=60,
        batch=10,
        clock=lambda: int(NOW.timestamp() * 1000),
    )
    assert await sweeper.sweep() == 1
    assert await store.tasks.count_documents({}) == 0
