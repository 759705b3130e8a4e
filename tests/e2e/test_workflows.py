"""Workflows through the real services: references passed between steps, for_each,
fail_fast and continue, cancelling a workflow, a reference that resolves to nothing,
and a rebuild that gives the same state."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack

from tests.e2e.conftest import ADMIN_KEY, USER_KEY

pytestmark = pytest.mark.e2e

STACK_ENV = {"TASKCORE_PARENT_RECOUNT_INTERVAL_SECONDS": "0.05"}
Json = dict[str, Any]


@pytest.fixture(scope="module")
def api(module_stack: Stack) -> Iterator[ApiClient]:
    with ApiClient(module_stack.api.url, USER_KEY) as client:
        yield client


def echo(value: Any, *depends_on: str, **more: Any) -> Json:
    return {
        "task_type": "diag.echo",
        "parameters": {"value": value},
        "depends_on": list(depends_on),
        **more,
    }


def ref(path: str) -> Json:
    return {"$ref": path}


def steps_of(workflow: Json) -> dict[str, Json]:
    steps: dict[str, Json] = workflow["workflow"]["steps"]
    return steps


def test_a_diamond_passes_results_through_references(api: ApiClient, module_stack: Stack) -> None:
    workflow = api.submit_workflow(
        {
            "name": "diamond",
            "steps": [
                {"id": "a", **echo({"n": 3, "items": ["x", "y"]})},
                {"id": "b", **echo(ref("a.result.value.n"), "a")},
                {"id": "c", **echo(ref("a.result.value.items[1]"), "a")},
                {"id": "d", **echo([ref("b.result.value"), ref("c.result.value")], "b", "c")},
            ],
        }
    )
    assert workflow["task_type"] == "workflow"
    assert {s["status"] for s in steps_of(workflow).values()} == {"PENDING"}

    done = api.wait_until(
        workflow["id"], lambda t: t["status"] not in ("QUEUED", "RUNNING"), timeout=60
    )

    assert done["status"] == "COMPLETED", done
    assert done["result"]["steps"]["d"] == {"value": [3, "y"]}
    steps = steps_of(done)
    assert {s["status"] for s in steps.values()} == {"COMPLETED"}
    assert steps["d"]["depends_on"] == ["b", "c"]
    children = api.tasks(parent_task_id=workflow["id"])
    assert sorted(c["id"] for c in children) == sorted(s["task_ids"][0] for s in steps.values())
    assert all(c["root_task_id"] == workflow["id"] for c in children)
    # One level below their root, like any child: TASKCORE_MAX_DEPTH counts from there
    with MongoClient(module_stack.env["MONGO_URL"]) as client:
        tasks = client[module_stack.env["MONGO_DB"]]["tasks"]
        depths = {d["_id"]: d.get("depth") for d in tasks.find({"parent_task_id": workflow["id"]})}
    assert set(depths.values()) == {1}, depths


def test_for_each_runs_one_task_per_element_and_returns_their_results_in_order(
    api: ApiClient,
) -> None:
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "make", **echo(list(range(100)))},
                {
                    "id": "square",
                    "task_type": "diag.echo",
                    "for_each": ref("make.result.value"),
                    "parameters": {"value": {"of": ref("item")}},
                    "depends_on": ["make"],
                },
            ]
        }
    )

    done = api.wait_until(
        workflow["id"], lambda t: t["status"] != "QUEUED" and t["status"] != "RUNNING", timeout=120
    )

    assert done["status"] == "COMPLETED", done
    assert done["result"]["steps"]["square"] == [{"value": {"of": i}} for i in range(100)]
    square = steps_of(done)["square"]
    assert len(square["task_ids"]) == 100
    element = api.task(square["task_ids"][7])
    assert element["parameters"] == {"value": {"of": 7}}
    assert element["status"] == "COMPLETED"


def test_fail_fast_cancels_the_running_steps_and_skips_the_rest(api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "slow", "task_type": "diag.sleep", "parameters": {"seconds": 60}},
                {"id": "after_slow", **echo(1, "slow")},
                {
                    "id": "broken",
                    "task_type": "diag.fail",
                    "parameters": {"times": 9, "retryable": False},
                },
            ]
        }
    )

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert done["status"] == "FAILED", done
    steps = steps_of(done)
    assert steps["broken"]["status"] == "DEAD_LETTER"
    assert steps["slow"]["status"] == "CANCELLED"
    assert steps["after_slow"]["status"] == "CANCELLED"
    assert steps["after_slow"]["task_ids"] == [], "a skipped step never had a task"


def test_continue_cancels_only_the_steps_that_depend_on_a_failure(api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {
            "on_failure": "continue",
            "steps": [
                {
                    "id": "broken",
                    "task_type": "diag.fail",
                    "parameters": {"times": 9, "retryable": False},
                },
                {"id": "needs_broken", **echo(1, "broken")},
                {"id": "fine", **echo("ok")},
                {"id": "after_fine", **echo(ref("fine.result.value"), "fine")},
            ],
        }
    )

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert done["status"] == "COMPLETED_WITH_ERRORS", done
    steps = steps_of(done)
    assert steps["needs_broken"]["status"] == "CANCELLED"
    assert steps["fine"]["status"] == "COMPLETED"
    assert steps["after_fine"]["status"] == "COMPLETED"
    assert done["result"]["steps"]["after_fine"] == {"value": "ok"}


def test_cancelling_a_workflow_cancels_its_running_steps_and_starts_no_more(
    api: ApiClient,
) -> None:
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "slow", "task_type": "diag.sleep", "parameters": {"seconds": 60}},
                {"id": "next", **echo(1, "slow")},
            ]
        }
    )
    api.wait_until(workflow["id"], lambda t: steps_of(t)["slow"]["status"] == "RUNNING")

    api.cancel(workflow["id"])
    done = api.wait_terminal(workflow["id"], timeout=30)

    assert done["status"] == "CANCELLED", done
    steps = steps_of(done)
    assert steps["slow"]["status"] == "CANCELLED"
    assert steps["next"]["status"] == "CANCELLED"
    assert steps["next"]["task_ids"] == []


def test_a_reference_that_resolves_to_nothing_fails_only_its_step(api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {
            "on_failure": "continue",
            "steps": [
                {"id": "a", **echo({"present": 1})},
                {"id": "b", **echo(ref("a.result.value.missing"), "a")},
                {"id": "c", **echo(ref("a.result.value.present"), "a")},
            ],
        }
    )

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert done["status"] == "COMPLETED_WITH_ERRORS", done
    steps = steps_of(done)
    assert steps["b"]["status"] == "FAILED"
    assert steps["b"]["task_ids"] == []
    assert steps["c"]["status"] == "COMPLETED"
    [failed] = [e for e in api.events(workflow["id"]) if e["type"] == "task.step_failed"]
    assert failed["data"]["step_id"] == "b"
    assert failed["data"]["error"]["type"] == "ReferenceError"


@pytest.mark.parametrize(
    ("workflow", "field"),
    [
        ({"steps": [echo(1) | {"id": "a"}, echo(1, "zz") | {"id": "b"}]}, "steps[1].depends_on[0]"),
        ({"steps": [{"id": "a", "task_type": "no.such.type"}]}, "steps[0].task_type"),
        (
            {"steps": [echo(1, "b") | {"id": "a"}, echo(1, "a") | {"id": "b"}]},
            "steps[1].depends_on[0]",  # the edge that closes the cycle
        ),
        (
            {
                "steps": [
                    echo(1) | {"id": "a"},
                    echo(
                        ref("a.result"),
                    )
                    | {"id": "b"},
                ]
            },
            "steps[1].parameters.value",
        ),
        (
            {"steps": [{"id": "a", "task_type": "diag.sleep", "parameters": {"seconds": "x"}}]},
            "steps[0].parameters.seconds",
        ),
    ],
)
def test_an_invalid_workflow_is_a_422_naming_the_field(
    api: ApiClient, workflow: Json, field: str
) -> None:
    answer = api.call("POST", "/v1/workflows", json=workflow)

    assert answer.status == 422, answer.body
    assert field in [d["field"] for d in answer.body["error"]["details"]]


def test_a_workflow_cannot_be_submitted_as_a_plain_task(api: ApiClient) -> None:
    answer = api.call("POST", "/v1/tasks", json={"task_type": "workflow", "parameters": {}})

    assert answer.status == 422


def test_rebuild_from_the_log_gives_the_same_workflows(module_stack: Stack, api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {"steps": [{"id": "a", **echo([1, 2])}, {"id": "b", **echo(ref("a.result.value"), "a")}]}
    )
    api.wait_terminal(workflow["id"], timeout=60)
    with ApiClient(module_stack.api.url, ADMIN_KEY) as admin:
        open_tasks = [t for t in admin.tasks() if t["status"] in ("QUEUED", "RUNNING")]
    for task in open_tasks:  # the other tests' workflows may still be closing
        api.wait_terminal(task["id"], timeout=60)

    check = subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "rebuild", "--check"],
        env={**module_stack.env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert check.returncode == 0, check.stdout + check.stderr


# ---- what the runtime must keep from the domain's rules ----------------------------------


def test_replaying_a_dead_lettered_step_does_not_resume_its_workflow(
    module_stack: Stack, api: ApiClient
) -> None:
    workflow = api.submit_workflow(
        {
            "on_failure": "continue",
            "steps": [
                {
                    "id": "a",
                    "task_type": "diag.fail",
                    "parameters": {"times": 1, "retryable": False},
                },
                {"id": "b", **echo(ref("a.result"), "a")},
                {"id": "c", "task_type": "diag.sleep", "parameters": {"seconds": 5}},
            ],
        }
    )
    running = api.wait_until(
        workflow["id"],
        lambda t: (
            steps_of(t)["a"]["status"] == "DEAD_LETTER"
            and steps_of(t)["b"]["status"] == "CANCELLED"
        ),
    )
    [step_a] = steps_of(running)["a"]["task_ids"]
    with ApiClient(module_stack.api.url, ADMIN_KEY) as admin:
        [dead] = admin.call("GET", "/v1/dead-letters", params={"task_id": step_a}).expect(200)[
            "items"
        ]
        admin.call("POST", f"/v1/dead-letters/{dead['id']}/replay").expect(202)
        admin.wait_until(step_a, lambda t: t["status"] == "COMPLETED")

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert steps_of(done)["b"] == {"status": "CANCELLED", "task_ids": [], "depends_on": ["a"]}
    assert done["status"] == "COMPLETED_WITH_ERRORS", done


def test_a_for_each_step_that_does_not_complete_fails_with_for_each_failed(
    api: ApiClient,
) -> None:
    workflow = api.submit_workflow(
        {
            "on_failure": "continue",
            "steps": [
                {"id": "make", **echo([0, 9])},
                {
                    "id": "each",
                    "task_type": "diag.fail",
                    "for_each": ref("make.result.value"),
                    "parameters": {"times": ref("item"), "retryable": False},
                    "depends_on": ["make"],
                },
            ],
        }
    )

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert "(ForEachFailed: 1 of 2 elements did not complete" in done["error"]["message"]


def test_fail_fast_names_only_the_step_that_failed(api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "slow", "task_type": "diag.sleep", "parameters": {"seconds": 60}},
                {
                    "id": "broken",
                    "task_type": "diag.fail",
                    "parameters": {"times": 9, "retryable": False},
                },
            ]
        }
    )

    done = api.wait_terminal(workflow["id"], timeout=60)

    assert done["error"]["type"] == "StepFailed"
    assert "'broken' ended DEAD_LETTER" in done["error"]["message"]
    assert "'slow'" not in done["error"]["message"], done["error"]["message"]
