"""The task state machine: which statuses are terminal and what may follow what."""

from __future__ import annotations

import pytest
from taskcore.domain.status import (
    ALLOWED_TRANSITIONS,
    OPEN_STATUSES,
    TERMINAL,
    TaskStatus,
    can_transition,
)

TERMINAL_STATUSES = {
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
    TaskStatus.DEAD_LETTER,
    TaskStatus.COMPLETED_WITH_ERRORS,
}


def test_the_terminal_statuses_are_those_of_the_architecture() -> None:
    assert set(TERMINAL) == TERMINAL_STATUSES
    assert {s for s in TaskStatus if s.is_terminal} == TERMINAL_STATUSES


def test_open_and_terminal_statuses_cover_every_status_once() -> None:
    assert set(OPEN_STATUSES) | TERMINAL == set(TaskStatus)
    assert not set(OPEN_STATUSES) & TERMINAL


def test_every_status_has_a_transition_rule() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(TaskStatus)


@pytest.mark.parametrize("current", sorted(TERMINAL_STATUSES - {TaskStatus.DEAD_LETTER}))
@pytest.mark.parametrize("target", list(TaskStatus))
def test_a_terminal_status_never_changes(current: TaskStatus, target: TaskStatus) -> None:
    assert not can_transition(current, target)


def test_a_dead_letter_may_only_be_replayed_back_to_queued() -> None:
    allowed = {t for t in TaskStatus if can_transition(TaskStatus.DEAD_LETTER, t)}

    assert allowed == {TaskStatus.QUEUED}


@pytest.mark.parametrize("current", OPEN_STATUSES)
@pytest.mark.parametrize(
    "target", [TaskStatus.RUNNING, TaskStatus.RETRYING, *sorted(TERMINAL_STATUSES)]
)
def test_an_open_task_accepts_any_outcome(current: TaskStatus, target: TaskStatus) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize("current", OPEN_STATUSES)
def test_an_open_task_never_goes_back_to_queued(current: TaskStatus) -> None:
    assert not can_transition(current, TaskStatus.QUEUED)
