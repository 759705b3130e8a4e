"""Properties of the state machine on random workflows run by a random at-least-once
runtime (see ``simulation``): what must hold whatever the order of events."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from taskcore.domain.status import TaskStatus
from taskcore.workflows import WorkflowPlan, decide

from .simulation import History, scripts, simulate, workflows

S = TaskStatus
# Each property runs 100 random workflows (about a second); together they run 900.
PROPERTY = settings(max_examples=100, deadline=None)


def run(plan: WorkflowPlan, script: random.Random) -> History:
    history = simulate(plan, script)
    assert not history.stuck, "decide ordered nothing, no task was open, and no finish"
    return history


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_every_step_starts_at_most_once(plan: WorkflowPlan, script: random.Random) -> None:
    history = run(plan, script)

    assert [s for s, n in Counter(history.starts).items() if n > 1] == []
    assert history.repeated_orders == []


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_a_step_never_starts_before_all_its_dependencies_completed(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)

    assert history.early_starts == []


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_the_workflow_finishes_exactly_once_and_only_with_no_step_open(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)

    assert len(history.finishes) == 1
    assert history.finished_with_open_tasks == 0
    assert all(s.terminal for s in history.state.steps.values())
    assert history.state.finished is history.finishes[0].status


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_decide_gives_the_same_orders_for_the_same_state(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)

    assert history.unstable_decisions == 0
    assert decide(plan, history.state) == []


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_the_final_status_follows_the_failure_policy(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)
    [finish] = history.finishes
    steps = history.state.steps

    if history.cancelled:
        assert finish.status is S.CANCELLED
    elif plan.on_failure == "fail_fast" and history.own_failures:
        assert finish.status is S.FAILED
        assert finish.error is not None
    elif all(s.completed for s in steps.values()):
        assert finish.status is S.COMPLETED
        assert finish.result == {"steps": {i: steps[i].result for i in plan.steps}}
    else:
        assert finish.status is S.COMPLETED_WITH_ERRORS
        assert finish.result == {"steps": {i: s.result for i, s in steps.items() if s.completed}}


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_nothing_starts_once_fail_fast_stopped_or_the_workflow_was_cancelled(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)

    assert history.starts_after_stop == []


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_a_skipped_step_always_had_a_reason_to_be_skipped(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)
    steps = history.state.steps

    stopped = history.cancelled or (plan.on_failure == "fail_fast" and history.own_failures)
    for step_id, step in steps.items():
        if step.skipped and not stopped:
            upstream = plan.steps[step_id].upstream
            assert any(steps[u].unsuccessful for u in upstream), step_id


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_under_continue_every_step_whose_inputs_completed_ran(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)
    steps = history.state.steps

    if plan.on_failure == "continue" and not history.cancelled:
        for step_id, planned in plan.steps.items():
            if all(steps[u].completed for u in planned.upstream):
                assert not steps[step_id].skipped, step_id


@PROPERTY
@given(plan=workflows(), script=scripts())
def test_a_for_each_result_lists_its_element_results_in_element_order(
    plan: WorkflowPlan, script: random.Random
) -> None:
    history = run(plan, script)

    for step_id, step in history.state.steps.items():
        if step.completed and step.elements is not None:
            expected = [history.results[t] for t in step.task_ids]
            assert step.result == expected, step_id
