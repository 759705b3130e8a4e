"""A running workflow's state, derived from its task tree (no store)."""

from __future__ import annotations

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows import WorkflowPlan, WorkflowSubmission
from taskcore.workflows.tree import StepTask, derive, element_task_id, settle, step_task_id, view

WF = "wf-1"


def plan(*steps: dict[str, object], on_failure: str = "fail_fast") -> WorkflowPlan:
    return WorkflowPlan.of(
        WorkflowSubmission.model_validate({"steps": list(steps), "on_failure": on_failure})
    )


def step(step_id: str, *depends_on: str, **more: object) -> dict[str, object]:
    return {"id": step_id, "task_type": "diag.echo", "depends_on": list(depends_on), **more}


def task(step_id: str, status: TaskStatus, result: object = None, **more: object) -> StepTask:
    return StepTask(step_task_id(WF, step_id), status, result, **more)  # type: ignore[arg-type]


def tree(*tasks: StepTask) -> dict[str, StepTask]:
    return {t.task_id: t for t in tasks}


def test_a_step_whose_task_exists_has_started_and_shows_its_task_status() -> None:
    p = plan(step("a"), step("b", "a"))
    state = derive(p, WF, tree(task("a", TaskStatus.RUNNING)), {}, cancel_requested=False)
    assert state.steps["a"].status is TaskStatus.RUNNING
    assert state.steps["b"].pending


def test_a_completed_step_carries_its_result() -> None:
    p = plan(step("a"))
    state = derive(
        p, WF, tree(task("a", TaskStatus.COMPLETED, {"x": 1})), {}, cancel_requested=False
    )
    assert state.steps["a"].result == {"x": 1}


def test_a_recorded_failure_fails_a_step_that_has_no_task() -> None:
    p = plan(step("a"), step("b", "a"))
    error = TaskError(type="ReferenceError", message="nothing there")
    state = derive(
        p, WF, tree(task("a", TaskStatus.COMPLETED, {})), {"b": error}, cancel_requested=False
    )
    assert state.steps["b"].status is TaskStatus.FAILED
    assert state.steps["b"].error == error


def test_settling_skips_what_can_no_longer_run_and_nothing_else() -> None:
    p = plan(step("a"), step("b", "a"), step("c"), on_failure="continue")
    state = derive(p, WF, tree(task("a", TaskStatus.DEAD_LETTER)), {}, cancel_requested=False)
    settled = settle(p, state)
    assert settled.steps["b"].status is TaskStatus.CANCELLED
    assert settled.steps["c"].pending, "an independent step still starts"


def test_a_cancelled_workflow_settles_every_pending_step_as_cancelled() -> None:
    p = plan(step("a"), step("b", "a"))
    state = derive(p, WF, tree(task("a", TaskStatus.RUNNING)), {}, cancel_requested=True)
    assert settle(p, state).steps["b"].status is TaskStatus.CANCELLED


def test_the_view_lists_a_for_each_steps_elements_not_its_container() -> None:
    p = plan(step("a"), step("b", "a", for_each={"$ref": "a.result.value"}))
    container = task("b", TaskStatus.RUNNING, children=3)
    tasks = tree(task("a", TaskStatus.COMPLETED, {"value": [1, 2, 3]}), container)
    shown = view(p, WF, derive(p, WF, tasks, {}, cancel_requested=False), tasks)
    assert shown["steps"]["b"]["task_ids"] == [
        element_task_id(container.task_id, n) for n in range(3)
    ]
    assert shown["steps"]["b"]["status"] == "RUNNING"
    assert shown["steps"]["a"]["task_ids"] == [step_task_id(WF, "a")]
