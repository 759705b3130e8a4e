"""The executor under faults, as real processes: kill -9 mid-task, SIGTERM mid-task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from taskcore.adapters.mongo import Store
from taskcore.testing import wait_for
from taskcore.testing.processes import ServiceProcess, Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {USER_KEY}"}


@pytest.fixture
def two_executors(stack_env: dict[str, str], tmp_path: Path, store: Store) -> Iterator[Stack]:
    s = Stack(env=stack_env, log_dir=tmp_path).start(executors=2)
    try:
        yield s
    finally:
        s.stop()
        print(s.logs())


def _submit(stack: Stack, task_type: str, parameters: dict[str, object]) -> str:
    response = httpx.post(
        f"{stack.api.url}/v1/tasks",
        headers=AUTH,
        json={"task_type": task_type, "parameters": parameters},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_status(stack: Stack, task_id: str, status: str, timeout: float = 20) -> dict[str, object]:
    def reached() -> dict[str, object] | None:
        body: dict[str, object] = httpx.get(
            f"{stack.api.url}/v1/tasks/{task_id}", headers=AUTH, timeout=5
        ).json()
        return body if body["status"] == status else None

    task = wait_for(reached, timeout=timeout, interval=0.1, message=f"{task_id} {status}")
    assert task is not None
    return task


def _holder(stack: Stack, node_id: str) -> ServiceProcess:
    [holder] = [
        p
        for p in stack.processes["executor"]
        if p.process is not None and node_id.endswith(f"-{p.process.pid}")
    ]
    return holder


async def _events(store: Store, task_id: str, type_: str) -> list[dict[str, object]]:
    query = {"task_id": task_id, "type": type_}
    return await store.events.find(query).sort("sequence", 1).to_list(None)


async def test_kill_9_mid_task_leads_to_exactly_one_completion_by_another_executor(
    two_executors: Stack, store: Store
) -> None:
    stack = two_executors
    # Given a task running on one of two executors
    task_id = _submit(stack, "diag.sleep", {"seconds": 3})
    running = _wait_status(stack, task_id, "RUNNING")
    victim = _holder(stack, str(running["execution_node_id"]))

    # When that executor is killed outright
    victim.kill()

    # then the other one runs it again once the lease (3 s) has expired, and completes it
    task = _wait_status(stack, task_id, "COMPLETED", timeout=40)
    assert task["attempts"] == 2
    assert task["execution_node_id"] != running["execution_node_id"]
    # exactly once, in the event log and in the projection
    assert len(await _events(store, task_id, "task.completed")) == 1
    first, second = await _events(store, task_id, "task.started")
    assert first["data"]["node_id"] == running["execution_node_id"]  # type: ignore[index]
    assert second["data"]["node_id"] == task["execution_node_id"]  # type: ignore[index]


async def test_sigterm_lets_the_running_task_finish(stack: Stack, store: Store) -> None:
    task_id = _submit(stack, "diag.sleep", {"seconds": 2})
    _wait_status(stack, task_id, "RUNNING")
    [executor] = stack.processes["executor"]

    began = time.monotonic()
    assert executor.stop() == 0  # SIGTERM; the grace period is 5 s
    assert time.monotonic() - began < 5

    task = _wait_status(stack, task_id, "COMPLETED")
    assert task["attempts"] == 1
    assert len(await _events(store, task_id, "task.completed")) == 1


async def test_sigterm_hands_back_a_task_outlasting_the_grace_period(
    stack: Stack, stack_env: dict[str, str], tmp_path: Path, store: Store
) -> None:
    # Given the stack's executor replaced by one with a one-second grace period
    stack.processes["executor"][0].stop()
    short = ServiceProcess(
        "executor", {**stack_env, "TASKCORE_SHUTDOWN_GRACE_SECONDS": "1"}, tmp_path
    ).start()
    stack.processes["executor"].append(short)
    task_id = _submit(stack, "diag.sleep", {"seconds": 4})
    _wait_status(stack, task_id, "RUNNING")

    # When it is told to stop mid-task, it exits after the grace period, handing it back
    began = time.monotonic()
    assert short.stop() == 0
    assert time.monotonic() - began < 4

    # then another executor claims it at once and completes it, once
    replacement = ServiceProcess("executor", stack_env, tmp_path).start()
    stack.processes["executor"].append(replacement)
    task = _wait_status(stack, task_id, "COMPLETED", timeout=30)
    assert task["attempts"] == 2
    assert len(await _events(store, task_id, "task.completed")) == 1
