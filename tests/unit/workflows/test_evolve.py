"""Folding facts into the workflow state: idempotent, and the first ending is final."""

from __future__ import annotations

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows import (
    Fact,
    ForEachStarted,
    StepCancelRequested,
    StepFailed,
    StepSkipped,
    StepStarted,
    StepState,
    StepTaskChanged,
    WorkflowCancelRequested,
    WorkflowFinished,
    WorkflowState,
    evolve,
    fold,
    initial_state,
)

S = TaskStatus
BOOM = TaskError(type="ValueError", message="boom")


def started() -> WorkflowState:
    return fold(
        initial_state(["a", "e", "p"]),
        [StepStarted("a", "ta"), ForEachStarted("e", ("e0", "e1", "e2"))],
    )


def test_a_new_workflow_has_every_step_pending() -> None:
    state = initial_state(["a", "b"])

    assert state.steps == {"a": StepState(), "b": StepState()}
    assert all(s.pending for s in state.steps.values())


def test_a_start_is_recorded_once_and_a_second_start_changes_nothing() -> None:
    state = started()

    assert state.steps["a"].status is S.QUEUED
    assert state.steps["a"].task_ids == ("ta",)
    assert evolve(state, StepStarted("a", "other")) == state
    assert evolve(state, ForEachStarted("e", ("x",))) == state


def test_every_fact_applied_twice_is_the_same_as_once() -> None:
    facts: list[Fact] = [
        StepTaskChanged("a", "ta", S.RUNNING),
        StepTaskChanged("e", "e1", S.COMPLETED, result=1, element=1),
        StepCancelRequested("e"),
        StepFailed("p", BOOM),
        StepTaskChanged("a", "ta", S.COMPLETED, result="r"),
        WorkflowCancelRequested(),
    ]
    for fact in facts:
        once = evolve(started(), fact)
        assert evolve(once, fact) == once, fact


def test_a_terminal_step_ignores_later_changes_of_its_task() -> None:
    state = evolve(started(), StepTaskChanged("a", "ta", S.COMPLETED, result="r"))

    for late in (S.RUNNING, S.QUEUED, S.FAILED):
        assert evolve(state, StepTaskChanged("a", "ta", late)) == state


def test_a_dead_lettered_step_that_is_replayed_stays_dead_for_the_workflow() -> None:
    state = evolve(started(), StepTaskChanged("a", "ta", S.DEAD_LETTER, error=BOOM))

    replayed = evolve(state, StepTaskChanged("a", "ta", S.QUEUED))

    assert replayed.steps["a"].status is S.DEAD_LETTER


def test_changes_of_tasks_the_step_does_not_know_are_ignored() -> None:
    state = started()

    assert evolve(state, StepTaskChanged("a", "stray", S.COMPLETED)) == state
    assert evolve(state, StepTaskChanged("p", "tp", S.COMPLETED)) == state  # not started
    assert evolve(state, StepTaskChanged("e", "e1", S.COMPLETED)) == state  # no element
    assert evolve(state, StepTaskChanged("e", "e0", S.COMPLETED, element=1)) == state
    assert evolve(state, StepTaskChanged("e", "e9", S.COMPLETED, element=9)) == state
    assert evolve(state, StepTaskChanged("a", "ta", S.COMPLETED, element=0)) == state
    assert evolve(state, StepTaskChanged("zz", "ta", S.COMPLETED)) == state


def test_a_for_each_step_is_queued_then_running_then_completed_with_results_in_order() -> None:
    state = started()
    assert state.steps["e"].status is S.QUEUED

    state = evolve(state, StepTaskChanged("e", "e2", S.RUNNING, element=2))
    assert state.steps["e"].status is S.RUNNING
    state = fold(
        state,
        [
            StepTaskChanged("e", "e2", S.COMPLETED, result="two", element=2),
            StepTaskChanged("e", "e0", S.COMPLETED, result="zero", element=0),
        ],
    )
    assert state.steps["e"].status is S.RUNNING
    assert state.steps["e"].open_task_ids() == ("e1",)

    state = evolve(state, StepTaskChanged("e", "e1", S.COMPLETED, result="one", element=1))

    assert state.steps["e"].status is S.COMPLETED
    assert state.steps["e"].result == ["zero", "one", "two"]
    assert state.steps["e"].error is None


def test_a_for_each_with_a_partial_element_completes_with_errors_keeping_the_results() -> None:
    state = fold(
        started(),
        [
            StepTaskChanged("e", "e0", S.COMPLETED, result=0, element=0),
            StepTaskChanged("e", "e1", S.COMPLETED_WITH_ERRORS, result=1, element=1),
            StepTaskChanged("e", "e2", S.COMPLETED, result=2, element=2),
        ],
    )

    assert state.steps["e"].status is S.COMPLETED_WITH_ERRORS
    assert state.steps["e"].result == [0, 1, 2]
    assert not state.steps["e"].failed_by_itself


def test_elements_cancelled_at_the_workflow_s_order_are_not_failures_of_their_own() -> None:
    state = fold(
        started(),
        [
            StepCancelRequested("e"),
            StepTaskChanged("e", "e0", S.CANCELLED, element=0),
            StepTaskChanged("e", "e1", S.CANCELLED, element=1),
            StepTaskChanged("e", "e2", S.COMPLETED, result=2, element=2),
        ],
    )

    assert state.steps["e"].status is S.CANCELLED
    assert not state.steps["e"].failed_by_itself


def test_an_element_cancelled_by_someone_else_is_a_failure_of_the_step() -> None:
    state = evolve(started(), StepTaskChanged("e", "e0", S.CANCELLED, element=0))

    assert state.steps["e"].failed_by_itself
    assert state.steps["e"].status is S.RUNNING


def test_a_failure_flag_once_set_survives_the_cancel_order_that_follows() -> None:
    state = fold(
        started(),
        [
            StepTaskChanged("e", "e0", S.FAILED, error=BOOM, element=0),
            StepCancelRequested("e"),
            StepTaskChanged("e", "e1", S.CANCELLED, element=1),
            StepTaskChanged("e", "e2", S.CANCELLED, element=2),
        ],
    )

    assert state.steps["e"].failed_by_itself
    assert state.steps["e"].status is S.FAILED


def test_only_a_pending_step_can_be_skipped_or_failed() -> None:
    state = started()

    assert evolve(state, StepSkipped("a")) == state
    assert evolve(state, StepFailed("a", BOOM)) == state
    skipped = evolve(state, StepSkipped("p"))
    assert (skipped.steps["p"].status, skipped.steps["p"].skipped) == (S.CANCELLED, True)
    failed = evolve(state, StepFailed("p", BOOM))
    assert (failed.steps["p"].status, failed.steps["p"].error) == (S.FAILED, BOOM)


def test_a_cancel_order_is_recorded_only_on_an_open_step() -> None:
    state = started()

    assert evolve(state, StepCancelRequested("a")).steps["a"].cancel_requested
    assert evolve(state, StepCancelRequested("p")) == state


def test_nothing_changes_a_finished_workflow() -> None:
    state = evolve(started(), WorkflowFinished(S.CANCELLED))

    assert state.finished is S.CANCELLED
    assert evolve(state, StepTaskChanged("a", "ta", S.COMPLETED)) == state
    assert evolve(state, WorkflowFinished(S.COMPLETED)) == state
