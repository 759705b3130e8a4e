"""The ``workflow`` field of the workflow task's projection."""

from __future__ import annotations

import json

from taskcore.domain.status import TaskStatus
from taskcore.workflows import workflow_view

from .runtime import Runner, plan_of, ref, step


def test_the_view_shows_each_step_s_status_tasks_and_dependencies_in_order() -> None:
    plan = plan_of(
        step("split"),
        step("each", "split", for_each=ref("split.result")),
        step("join", "each"),
        on_failure="continue",
    )
    runner = Runner(plan)
    runner.settle()
    runner.end("split", result=[1, 2])

    view = workflow_view(plan, runner.state)

    assert view == {
        "name": None,
        "on_failure": "continue",
        "steps": {
            "split": {"status": "COMPLETED", "task_ids": ["step:split"], "depends_on": []},
            "each": {
                "status": "QUEUED",
                "task_ids": ["step:each:0", "step:each:1"],
                "depends_on": ["split"],
            },
            "join": {"status": "PENDING", "task_ids": [], "depends_on": ["each"]},
        },
    }
    assert list(view["steps"]) == ["split", "each", "join"]
    assert json.loads(json.dumps(view)) == view


def test_a_skipped_step_shows_cancelled_with_no_tasks() -> None:
    plan = plan_of(step("a"), step("b", "a"))
    runner = Runner(plan)
    runner.settle()
    runner.end("a", TaskStatus.FAILED)

    steps = workflow_view(plan, runner.state)["steps"]

    assert steps["b"] == {"status": "CANCELLED", "task_ids": [], "depends_on": ["a"]}
