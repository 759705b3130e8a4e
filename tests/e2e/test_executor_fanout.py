"""Fan-out and fan-in through the real services: a 1,000-child diag.fanout and the LLM
batch type (offline provider), each child created once and completed once."""

from __future__ import annotations

import time

import httpx
import pytest
from pymongo import AsyncMongoClient
from taskcore.adapters.mongo import Doc
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

# The LLM types, on the built-in offline provider (TASKCORE_PROVIDERS unset).
STACK_ENV = {"TASKCORE_PLUGINS": "taskcore_executor.tasktypes.llm"}
AUTH = {"Authorization": f"Bearer {USER_KEY}"}


def _submit(stack: Stack, task_type: str, parameters: dict[str, object]) -> str:
    response = httpx.post(
        f"{stack.api.url}/v1/tasks",
        headers=AUTH,
        json={"task_type": task_type, "parameters": parameters},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_terminal(stack: Stack, task_id: str, timeout: float) -> dict[str, object]:
    def terminal() -> dict[str, object] | None:
        body: dict[str, object] = httpx.get(
            f"{stack.api.url}/v1/tasks/{task_id}", headers=AUTH, timeout=5
        ).json()
        open_ = body["status"] in ("QUEUED", "RUNNING", "RETRYING")
        return None if open_ else body

    task = wait_for(terminal, timeout=timeout, interval=0.25, message=f"{task_id} terminal")
    assert task is not None
    return task


async def _children_report(stack: Stack, parent: str) -> tuple[list[Doc], dict[str, int]]:
    """The children's documents, and ``task.completed`` events per child in the log."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(stack.env["MONGO_URL"])
    try:
        db = client[stack.env["MONGO_DB"]]
        children = await db.tasks.find({"parent_task_id": parent}).to_list(None)
        ids = [c["_id"] for c in children]
        completions = dict.fromkeys(ids, 0)
        cursor = db.task_events.find(
            {"task_id": {"$in": ids}, "type": "task.completed"}, {"task_id": 1}
        )
        async for event in cursor:
            completions[event["task_id"]] += 1
        return children, completions
    finally:
        await client.close()


async def test_a_thousand_child_fanout_completes_with_the_right_summary(
    module_stack: Stack,
) -> None:
    began = time.monotonic()
    parent = _submit(module_stack, "diag.fanout", {"count": 1000})

    task = _wait_terminal(module_stack, parent, timeout=240)
    elapsed = time.monotonic() - began
    assert task["status"] == "COMPLETED", task
    assert task["subtasks"] == {
        "total": 1000,
        "queued": 0,
        "running": 0,
        "completed": 1000,
        "failed": 0,
        "cancelled": 0,
        "dead_letter": 0,
    }
    assert task["result"]["submitted"] == 1000  # type: ignore[index]
    children, completions = await _children_report(module_stack, parent)
    assert len(children) == 1000
    assert {c["status"] for c in children} == {"COMPLETED"}
    assert set(completions.values()) == {1}  # every child completed exactly once
    print(f"1,000-child fan-out: parent terminal after {elapsed:.1f} s")


async def test_batch_generate_summary_fans_out_one_child_per_item(module_stack: Stack) -> None:
    texts = [
        "The harbour froze overnight. Fishermen walked to their boats. Nobody sailed.",
        "A new bridge opened in the city. Traffic eased within a week.",
        "The library extended its hours. Students filled the reading rooms.",
    ]
    parent = _submit(
        module_stack,
        "batch_generate_summary",
        {"items": [{"text": t, "max_words": 12} for t in texts]},
    )
    task = _wait_terminal(module_stack, parent, timeout=60)
    assert task["status"] == "COMPLETED", task
    assert task["subtasks"]["total"] == 3  # type: ignore[index]
    assert task["subtasks"]["completed"] == 3  # type: ignore[index]
    children, completions = await _children_report(module_stack, parent)
    assert sorted(c["task_type"] for c in children) == ["generate_summary"] * 3
    assert set(completions.values()) == {1}
    for child in children:
        assert 0 < child["result"]["word_count"] <= 12
        assert child["result"]["provider"] == "offline"
