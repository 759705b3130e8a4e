"""``evolve(state, event) -> state`` and ``fold(events)``: pure, total, never raising.

Events are facts that already happened, so evolve never refuses one. It ignores what
cannot change the state:

- an event whose sequence is not above ``state.version`` (a duplicate or a late one:
  the aggregator re-folds from the log when a late event arrives, see ``fold``);
- any event on a terminal task, except ``task.replayed`` on a dead letter and
  ``task.usage_recorded`` (a provider call is paid for whatever became of the task: a
  call of an attempt that lost its lease may be logged after the task ended);
- an event for a task that was never submitted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.status import TaskStatus, can_transition
from taskcore.domain.task import SubtaskCounts, Task, TaskError
from taskcore.domain.usage import Usage, UsageRecorded, combined


def fold(events: Iterable[TaskEvent], state: Task | None = None) -> Task | None:
    """The state after every event, applied in sequence order."""
    for event in sorted(events, key=lambda e: e.sequence):
        state = evolve(state, event)
    return state


def evolve(state: Task | None, event: TaskEvent) -> Task | None:
    if event.type is EventType.SUBMITTED:
        return _submitted(event) if state is None or state.version == 0 else state
    if state is None or event.sequence <= state.version:
        return state
    if state.status.is_terminal and not _reopens(state, event):
        spent = _usage_recorded(state, event) if event.type is EventType.USAGE_RECORDED else {}
        return state.model_copy(update={**spent, "version": event.sequence})
    apply = _APPLY.get(event.type)
    changes = apply(state, event) if apply else {}
    target = changes.get("status", state.status)
    if target != state.status and not can_transition(state.status, target):
        changes = {}
    return state.model_copy(
        update={**changes, "version": event.sequence, "updated_at": event.occurred_at}
    )


def _reopens(state: Task, event: TaskEvent) -> bool:
    return event.type is EventType.REPLAYED and state.status is TaskStatus.DEAD_LETTER


def _submitted(event: TaskEvent) -> Task:
    d = event.data
    return Task(
        id=event.task_id,
        user_id=d["user_id"],
        task_type=d["task_type"],
        status=TaskStatus.QUEUED,
        parameters=d.get("parameters") or {},
        max_attempts=d.get("max_attempts", 3),
        priority=d.get("priority", 0),
        tier=d.get("tier", "paid"),
        parent_task_id=d.get("parent_task_id"),
        root_task_id=d.get("root_task_id") or event.task_id,
        depth=d.get("depth", 0),
        labels=d.get("labels") or {},
        team_id=d.get("team_id"),
        scheduled_for=d.get("scheduled_for"),
        schedule_id=d.get("schedule_id"),
        timeout_seconds=d.get("timeout_seconds"),
        subtask_policy=d.get("subtask_policy", "collect_all"),
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        version=event.sequence,
    )


def _error(data: dict[str, Any]) -> TaskError | None:
    raw = data.get("error")
    return TaskError.model_validate(raw) if raw else None


def _started(state: Task, event: TaskEvent) -> dict[str, Any]:
    return {
        "status": TaskStatus.RUNNING,
        "attempts": state.attempts + 1,
        "started_at": state.started_at or event.occurred_at,
        "last_attempt_at": event.occurred_at,
        "next_attempt_at": None,
        "execution_node_id": event.data.get("node_id"),
    }


def _progress(state: Task, event: TaskEvent) -> dict[str, Any]:
    return {"progress": event.data.get("progress")}


def _retrying(state: Task, event: TaskEvent) -> dict[str, Any]:
    next_at = event.data.get("next_attempt_at")
    return {
        "status": TaskStatus.RETRYING,
        "retry_count": event.data.get("retry_count", state.retry_count + 1),
        "error": _error(event.data),
        "next_attempt_at": datetime.fromisoformat(next_at) if isinstance(next_at, str) else next_at,
    }


def _awaiting_children(state: Task, event: TaskEvent) -> dict[str, Any]:
    return {"awaiting_children": True, "result": event.data.get("result")}


def _finished(status: TaskStatus) -> Any:
    def apply(state: Task, event: TaskEvent) -> dict[str, Any]:
        changes: dict[str, Any] = {
            "status": status,
            "finished_at": event.occurred_at,
            "next_attempt_at": None,
            "awaiting_children": False,
        }
        if "result" in event.data:
            changes["result"] = event.data["result"]
        if "progress" in event.data:
            changes["progress"] = event.data["progress"]
        # A task that completes after retries shows no error; any other end keeps the
        # error that caused it (or the last one seen).
        changes["error"] = (
            None if status is TaskStatus.COMPLETED else _error(event.data) or state.error
        )
        if "retry_count" in event.data:
            changes["retry_count"] = event.data["retry_count"]
        if "dead_letter_id" in event.data:
            changes["dead_letter_id"] = event.data["dead_letter_id"]
        if isinstance(event.data.get("attempts"), int):
            # Attempts whose executor died before announcing their start (a stalled task).
            changes["attempts"] = max(state.attempts, event.data["attempts"])
        return changes

    return apply


def _cancel_requested(state: Task, event: TaskEvent) -> dict[str, Any]:
    return {"cancel_requested": True}


def _replayed(state: Task, event: TaskEvent) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "status": TaskStatus.QUEUED,
        "retry_count": 0,
        "finished_at": None,
        "next_attempt_at": None,
        "dead_letter_id": None,
    }
    if event.data.get("parameters") is not None:
        changes["parameters"] = event.data["parameters"]
    return changes


def _no_change(state: Task, event: TaskEvent) -> dict[str, Any]:
    """A fact kept in the log that the task's own fields do not show."""
    return {}


def _usage_recorded(state: Task, event: TaskEvent) -> dict[str, Any]:
    call = UsageRecorded.parse(event.data)
    if call is None:
        return {}
    return {"own_usage": combined(state.own_usage, Usage.of_call(call))}


_APPLY: dict[EventType, Any] = {
    EventType.STARTED: _started,
    EventType.PROGRESS: _progress,
    EventType.RETRYING: _retrying,
    EventType.AWAITING_CHILDREN: _awaiting_children,
    EventType.COMPLETED: _finished(TaskStatus.COMPLETED),
    EventType.COMPLETED_WITH_ERRORS: _finished(TaskStatus.COMPLETED_WITH_ERRORS),
    EventType.FAILED: _finished(TaskStatus.FAILED),
    EventType.CANCELLED: _finished(TaskStatus.CANCELLED),
    EventType.DEAD_LETTERED: _finished(TaskStatus.DEAD_LETTER),
    EventType.CANCEL_REQUESTED: _cancel_requested,
    EventType.REPLAYED: _replayed,
    EventType.DISCARDED: _no_change,
    EventType.STEP_FAILED: _no_change,  # a workflow's state reads it from the log
    EventType.USAGE_RECORDED: _usage_recorded,
}


def with_subtasks(state: Task, counts: SubtaskCounts) -> Task:
    """A parent's counters are derived from its children's projections, not its own log."""
    return state.model_copy(update={"subtasks": counts})
