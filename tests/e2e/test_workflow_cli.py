"""``taskcore submit-workflow`` and ``taskcore watch`` on workflows, against the running
stack; and the shipped example, ``examples/novel_import.json``, run to its outline."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

STACK_ENV = {"TASKCORE_PARENT_RECOUNT_INTERVAL_SECONDS": "0.05"}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "novel_import.json"
Json = dict[str, Any]


@dataclass
class Run:
    status: int
    out: str
    err: str

    @property
    def json_lines(self) -> list[Json]:
        return [json.loads(line) for line in self.out.splitlines()]


async def taskcore(stack: Stack, *args: str, stdin: str | None = None) -> Run:
    env = {**os.environ, "TASKCORE_API_URL": stack.api.url, "TASKCORE_API_KEY": USER_KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskcore.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    data = stdin.encode() if stdin is not None else None
    out, err = await asyncio.wait_for(process.communicate(data), timeout=90)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
def api(module_stack: Stack) -> Iterator[ApiClient]:
    with ApiClient(module_stack.api.url, USER_KEY) as client:
        yield client


def write(tmp_path: Path, workflow: Json) -> str:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    return str(path)


def step_lines(err: str, step: str) -> list[str]:
    return [line.split() for line in err.splitlines() if line.split()[:1] == [step]]


async def test_the_novel_import_example_runs_to_an_outline_of_every_chapter(
    module_stack: Stack, api: ApiClient
) -> None:
    run = await taskcore(module_stack, "submit-workflow", str(EXAMPLE), "--watch", "--quiet")

    assert run.status == 0, run.err
    workflow_id = run.out.splitlines()[0]
    assert run.out.splitlines()[-1].startswith("COMPLETED {")
    assert "\x1b[" not in run.err, "no cursor movement when stderr is not a terminal"
    assert step_lines(run.err, "split")[-1][:2] == ["split", "COMPLETED"]
    assert step_lines(run.err, "summarise")[-1] == ["summarise", "COMPLETED", "4/4", "elements"]
    assert step_lines(run.err, "outline")[-1][:2] == ["outline", "COMPLETED"]

    steps = api.task(workflow_id)["result"]["steps"]
    split, summaries, outline = steps["split"], steps["summarise"], steps["outline"]
    assert outline["title"] == split["title"] == "THE KEEPER OF THE NORTH LIGHT"
    assert outline["chapter_count"] == len(split["chapters"]) == 4
    assert [c["title"] for c in outline["chapters"]] == split["titles"]
    assert split["titles"][0] == "Chapter I. The Lamp"
    for number, (entry, summary) in enumerate(zip(outline["chapters"], summaries, strict=True), 1):
        assert entry["number"] == number
        assert entry["summary"] == summary["summary"] != ""
        assert summary["provider"] == "offline"
        assert 0 < entry["words"] <= 40
    assert outline["outline"].startswith("# THE KEEPER OF THE NORTH LIGHT\n\n1. **Chapter I.")


async def test_watch_counts_a_for_each_steps_elements_as_they_finish(
    module_stack: Stack, api: ApiClient
) -> None:
    durations = [round(0.4 * i, 1) for i in range(8)]  # the elements end 0.4 s apart
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "make", "task_type": "diag.echo", "parameters": {"value": durations}},
                {
                    "id": "each",
                    "task_type": "diag.sleep",
                    "depends_on": ["make"],
                    "for_each": {"$ref": "make.result.value"},
                    "parameters": {"seconds": {"$ref": "item"}},
                },
            ]
        }
    )

    run = await taskcore(module_stack, "watch", workflow["id"], "--json", "--interval", "0.2")

    assert run.status == 0, run.err
    boards = [line["data"] for line in run.json_lines if line["event"] == "workflow.steps"]
    counted = [b["steps"]["each"]["done"] for b in boards if "done" in b["steps"]["each"]]
    assert counted == sorted(counted), "elements done never go down"
    assert any(0 < done < len(durations) for done in counted), boards
    assert boards[-1]["status"] == "COMPLETED"
    assert boards[-1]["steps"]["each"] == {"status": "COMPLETED", "done": 8, "total": 8}
    events = [line for line in run.json_lines if line["event"] != "workflow.steps"]
    assert events[0]["event"] == "state"
    assert events[-1]["data"]["status"] == "COMPLETED"


async def test_a_workflow_that_continues_past_a_failed_step_exits_2_and_says_why(
    module_stack: Stack, tmp_path: Path
) -> None:
    workflow = {
        "on_failure": "continue",
        "steps": [
            {"id": "a", "task_type": "diag.echo", "parameters": {"value": {"n": 1}}},
            {
                "id": "b",
                "task_type": "diag.echo",
                "depends_on": ["a"],
                "parameters": {"value": {"$ref": "a.result.value.missing"}},
            },
            {"id": "c", "task_type": "diag.echo", "depends_on": ["b"]},
            {"id": "d", "task_type": "diag.echo", "depends_on": ["a"]},
        ],
    }

    run = await taskcore(module_stack, "submit-workflow", write(tmp_path, workflow), "--watch")

    assert run.status == 2, run.err
    assert run.out.splitlines()[-1].startswith("COMPLETED_WITH_ERRORS")
    assert step_lines(run.err, "b")[-1][:3] == ["b", "FAILED", "ReferenceError:"]
    assert step_lines(run.err, "c")[-1][:2] == ["c", "CANCELLED"]
    assert step_lines(run.err, "d")[-1][:2] == ["d", "COMPLETED"]


async def test_a_failed_workflow_exits_1_and_shows_the_steps_error(
    module_stack: Stack, tmp_path: Path
) -> None:
    workflow = {
        "steps": [
            {"id": "slow", "task_type": "diag.sleep", "parameters": {"seconds": 60}},
            {
                "id": "broken",
                "task_type": "diag.fail",
                "parameters": {"times": 9, "retryable": False},
            },
        ]
    }

    run = await taskcore(module_stack, "submit-workflow", write(tmp_path, workflow), "--watch")

    assert run.status == 1, run.err
    assert run.out.splitlines()[-1].startswith("FAILED")
    broken = " ".join(step_lines(run.err, "broken")[-1])
    assert broken.startswith("broken DEAD_LETTER")
    assert "diag.fail: attempt 1 fails" in broken
    assert step_lines(run.err, "slow")[-1][:2] == ["slow", "CANCELLED"]


async def test_cancelling_a_watched_workflow_exits_3(module_stack: Stack, api: ApiClient) -> None:
    workflow = api.submit_workflow(
        {
            "steps": [
                {"id": "slow", "task_type": "diag.sleep", "parameters": {"seconds": 60}},
                {"id": "next", "task_type": "diag.echo", "depends_on": ["slow"]},
            ]
        }
    )
    watching = asyncio.create_task(taskcore(module_stack, "watch", workflow["id"]))

    async def slow_running() -> bool:
        task = await asyncio.to_thread(api.task, workflow["id"])
        return bool(task["workflow"]["steps"]["slow"]["status"] == "RUNNING")

    await wait_for_async(slow_running, timeout=30, message="the slow step to run")
    await asyncio.to_thread(api.cancel, workflow["id"])
    run = await watching

    assert run.status == 3, run.err
    assert run.out.splitlines()[-1].startswith("CANCELLED")
    assert step_lines(run.err, "slow")[-1][:2] == ["slow", "CANCELLED"]
    assert step_lines(run.err, "next")[-1][:2] == ["next", "CANCELLED"]


async def test_an_invalid_workflow_is_refused_with_each_field_and_reason(
    module_stack: Stack, tmp_path: Path
) -> None:
    workflow = {
        "steps": [
            {"id": "a", "task_type": "no.such.type"},
            {"id": "b", "task_type": "diag.echo", "depends_on": ["zz"]},
        ]
    }

    run = await taskcore(module_stack, "submit-workflow", "-", stdin=json.dumps(workflow))

    assert run.status == 4
    assert "HTTP 422" in run.err
    assert "steps[0].task_type: not a registered task type" in run.err
    assert "steps[1].depends_on[0]: unknown step id 'zz'" in run.err


async def test_a_file_that_is_not_a_workflow_is_refused_before_any_request(
    module_stack: Stack, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": [')

    not_json = await taskcore(module_stack, "submit-workflow", str(broken))
    a_list = await taskcore(module_stack, "submit-workflow", "-", stdin="[]")
    missing = await taskcore(module_stack, "submit-workflow", str(tmp_path / "nope.json"))

    assert not_json.status == a_list.status == missing.status == 4
    assert f"{broken} is not valid JSON" in not_json.err
    assert "must hold one JSON object" in a_list.err
    assert "nope.json" in missing.err


async def test_a_retried_submission_with_its_idempotency_key_is_the_same_workflow(
    module_stack: Stack, tmp_path: Path
) -> None:
    path = write(tmp_path, {"steps": [{"id": "a", "task_type": "diag.echo"}]})
    key = os.urandom(8).hex()

    first = await taskcore(module_stack, "submit-workflow", path, "--idempotency-key", key)
    again = await taskcore(module_stack, "submit-workflow", path, "--idempotency-key", key)

    assert first.status == again.status == 0, first.err + again.err
    assert json.loads(first.out)["id"] == json.loads(again.out)["id"]
    assert json.loads(first.out)["task_type"] == "workflow"
