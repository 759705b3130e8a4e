"""What each event does to the task projection, one example at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from taskcore.domain.events import CURRENT_SCHEMA_VERSION, EventType, TaskEvent
from taskcore.domain.evolve import evolve, fold
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import Task, TaskError
from taskcore.domain.upcasting import upcast

from .streams import TASK_ID, at, error_data, event, submitted


def folded(*events: TaskEvent) -> Task:
    state = fold(events)
    assert state is not None
    return state


def started(sequence: int, node: str = "node-a") -> TaskEvent:
    return event(EventType.STARTED, sequence, {"node_id": node})


def completed(sequence: int, result: Any = None) -> TaskEvent:
    return event(EventType.COMPLETED, sequence, {"result": result})


def dead_lettered(sequence: int) -> TaskEvent:
    return event(
        EventType.DEAD_LETTERED,
        sequence,
        {"error": error_data("gave up"), "retry_count": 2, "dead_letter_id": "dl-1"},
    )


def test_submitted_creates_a_queued_task_from_its_payload() -> None:
    task = folded(submitted(parameters={"seconds": 1}, max_attempts=5, priority=7, tier="free"))

    assert task.id == TASK_ID
    assert (task.user_id, task.task_type) == ("alice", "diag.noop")
    assert task.status is TaskStatus.QUEUED
    assert task.parameters == {"seconds": 1}
    assert (task.max_attempts, task.priority, task.tier) == (5, 7, "free")
    assert task.root_task_id == TASK_ID
    assert task.created_at == task.updated_at == at(1)
    assert (task.attempts, task.retry_count, task.version) == (0, 0, 1)


def test_a_subtask_keeps_its_parent_and_root() -> None:
    task = folded(submitted(parent_task_id="p-1", root_task_id="r-1"))

    assert (task.parent_task_id, task.root_task_id) == ("p-1", "r-1")


def test_events_before_the_submission_are_ignored() -> None:
    assert evolve(None, started(1001)) is None


def test_started_counts_the_attempt_and_records_when_and_where() -> None:
    task = folded(submitted(), started(1001, "node-a"))

    assert task.status is TaskStatus.RUNNING
    assert task.attempts == 1
    assert task.started_at == task.last_attempt_at == at(1001)
    assert task.execution_node_id == "node-a"
    assert task.updated_at == at(1001)
    assert task.version == 1001


def test_started_again_keeps_the_first_start_and_moves_the_last_attempt() -> None:
    retrying = event(EventType.RETRYING, 1002, {"retry_count": 1, "error": error_data()})

    task = folded(submitted(), started(1001, "node-a"), retrying, started(2001, "node-b"))

    assert task.attempts == 2
    assert task.started_at == at(1001)
    assert task.last_attempt_at == at(2001)
    assert task.execution_node_id == "node-b"
    assert task.next_attempt_at is None


def test_retrying_records_the_budget_the_error_and_the_next_attempt() -> None:
    next_at = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    retrying = event(
        EventType.RETRYING,
        1002,
        {"retry_count": 1, "error": error_data("flaky"), "next_attempt_at": next_at.isoformat()},
    )

    task = folded(submitted(), started(1001), retrying)

    assert task.status is TaskStatus.RETRYING
    assert task.retry_count == 1
    assert task.error == TaskError(type="RuntimeError", message="flaky", retryable=True)
    assert task.next_attempt_at == next_at
    assert task.attempts == 1


def test_retrying_without_a_count_counts_one_more_retry() -> None:
    first = event(EventType.RETRYING, 1002, {"error": error_data()})
    second = event(EventType.RETRYING, 2002, {"error": error_data()})

    task = folded(submitted(), started(1001), first, started(2001), second)

    assert task.retry_count == 2


def test_progress_is_recorded_while_the_task_runs() -> None:
    progress = event(EventType.PROGRESS, 1002, {"progress": {"done": 3, "total": 10}})

    task = folded(submitted(), started(1001), progress)

    assert task.status is TaskStatus.RUNNING
    assert task.progress == {"done": 3, "total": 10}


def test_completed_records_the_result_and_when_it_finished() -> None:
    task = folded(submitted(), started(1001), completed(1002, {"answer": 42}))

    assert task.status is TaskStatus.COMPLETED
    assert task.result == {"answer": 42}
    assert task.finished_at == at(1002)
    assert task.next_attempt_at is None


def test_failed_records_the_error() -> None:
    failed = event(EventType.FAILED, 1002, {"error": error_data("bad input", retryable=False)})

    task = folded(submitted(), started(1001), failed)

    assert task.status is TaskStatus.FAILED
    assert task.error == TaskError(type="RuntimeError", message="bad input", retryable=False)
    assert task.finished_at == at(1002)


def test_dead_lettered_records_the_error_the_budget_and_the_dead_letter() -> None:
    task = folded(submitted(), started(1001), dead_lettered(1002))

    assert task.status is TaskStatus.DEAD_LETTER
    assert task.error is not None
    assert task.error.message == "gave up"
    assert task.retry_count == 2
    assert task.dead_letter_id == "dl-1"


def test_a_terminal_event_keeps_the_last_error_when_it_brings_none() -> None:
    retrying = event(EventType.RETRYING, 1002, {"retry_count": 1, "error": error_data("first")})
    cancelled = event(EventType.CANCELLED, 1003)

    task = folded(submitted(), started(1001), retrying, cancelled)

    assert task.status is TaskStatus.CANCELLED
    assert task.error is not None
    assert task.error.message == "first"


def test_a_replay_moves_a_dead_letter_back_to_queued_with_a_fresh_budget() -> None:
    replayed = event(EventType.REPLAYED, 1003, {"parameters": {"fixed": True}})

    task = folded(submitted(), started(1001), dead_lettered(1002), replayed)

    assert task.status is TaskStatus.QUEUED
    assert task.retry_count == 0
    assert task.finished_at is None
    assert task.dead_letter_id is None
    assert task.parameters == {"fixed": True}
    # attempts count every execution over the task's whole life: a replay keeps them.
    assert task.attempts == 1
    assert task.version == 1003


def test_a_replayed_task_runs_and_completes_again() -> None:
    replayed = event(EventType.REPLAYED, 1003)

    task = folded(
        submitted(), started(1001), dead_lettered(1002), replayed, started(2001), completed(2002)
    )

    assert task.status is TaskStatus.COMPLETED
    assert task.attempts == 2


def test_a_replay_of_a_completed_task_is_ignored() -> None:
    done = folded(submitted(), started(1001), completed(1002, "ok"))

    after = evolve(done, event(EventType.REPLAYED, 1003))

    assert after is not None
    assert after.status is TaskStatus.COMPLETED
    assert after == done.model_copy(update={"version": 1003})


def test_a_replay_of_an_open_task_is_ignored() -> None:
    running = folded(submitted(), started(1001))

    after = evolve(running, event(EventType.REPLAYED, 1002))

    assert after is not None
    assert after.status is TaskStatus.RUNNING


def test_progress_after_completion_is_ignored() -> None:
    done = folded(submitted(), started(1001), completed(1003, "ok"))

    late = evolve(done, event(EventType.PROGRESS, 1004, {"progress": {"done": 1, "total": 2}}))

    assert late is not None
    assert late.progress is None
    assert late.status is TaskStatus.COMPLETED
    assert late.updated_at == done.updated_at


@pytest.mark.parametrize(
    "outcome",
    [EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED, EventType.STARTED],
)
def test_nothing_follows_a_cancellation(outcome: EventType) -> None:
    cancelled = folded(submitted(), event(EventType.CANCELLED, 2))

    after = evolve(cancelled, event(outcome, 1001))

    assert after is not None
    assert after.status is TaskStatus.CANCELLED
    assert after.attempts == 0


def test_an_event_at_or_below_the_version_is_ignored() -> None:
    running = folded(submitted(), started(1001), started(1005))

    late = evolve(running, started(1003))

    assert late == running


def test_a_repeated_submission_does_not_reset_the_task() -> None:
    running = folded(submitted(), started(1001))

    assert evolve(running, submitted()) == running


def test_cancel_requested_sets_the_flag_and_keeps_the_status() -> None:
    task = folded(submitted(), started(1001), event(EventType.CANCEL_REQUESTED, 1002))

    assert task.cancel_requested is True
    assert task.status is TaskStatus.RUNNING


def test_awaiting_children_keeps_running_and_sets_the_flag() -> None:
    awaiting = event(EventType.AWAITING_CHILDREN, 1002, {"result": {"spawned": 3}})

    task = folded(submitted(), started(1001), awaiting)

    assert task.status is TaskStatus.RUNNING
    assert task.awaiting_children is True
    assert task.result == {"spawned": 3}


def test_the_parent_outcome_clears_awaiting_children() -> None:
    awaiting = event(EventType.AWAITING_CHILDREN, 1002)
    outcome = event(EventType.COMPLETED_WITH_ERRORS, 1003, {"result": {"failed": 1}})

    task = folded(submitted(), started(1001), awaiting, outcome)

    assert task.status is TaskStatus.COMPLETED_WITH_ERRORS
    assert task.awaiting_children is False
    assert task.result == {"failed": 1}


def test_discarded_changes_nothing_but_the_version() -> None:
    dead = folded(submitted(), started(1001), dead_lettered(1002))

    after = evolve(dead, event(EventType.DISCARDED, 1003))

    assert after == dead.model_copy(update={"version": 1003})


def _stored_v1_failure() -> dict[str, Any]:
    return {
        "event_id": f"{TASK_ID}:1002",
        "task_id": TASK_ID,
        "sequence": 1002,
        "type": "task.failed",
        "schema_version": 1,
        "occurred_at": at(1002).isoformat(),
        "data": {"error": "disk full"},
    }


def test_a_version_1_event_is_upcast_so_its_error_string_becomes_an_object() -> None:
    stored = _stored_v1_failure()

    upcast_event = TaskEvent.model_validate(upcast(stored))
    task = folded(submitted(), started(1001), upcast_event)

    assert upcast_event.schema_version == CURRENT_SCHEMA_VERSION
    assert task.status is TaskStatus.FAILED
    assert task.error == TaskError(type="Error", message="disk full", retryable=False)
    assert stored["data"] == {"error": "disk full"}, "upcasting never rewrites what is stored"


def test_an_event_without_a_schema_version_is_read_as_version_1() -> None:
    stored = _stored_v1_failure()
    del stored["schema_version"]

    assert upcast(stored)["data"]["error"]["message"] == "disk full"


def test_a_current_event_is_not_changed_by_upcasting() -> None:
    current = event(EventType.FAILED, 1002, {"error": error_data()}).model_dump(mode="json")

    assert upcast(current) == current
