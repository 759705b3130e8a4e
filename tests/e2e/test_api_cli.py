"""``taskcore submit`` and ``taskcore watch`` at a terminal, against the running stack."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

import httpx
import pytest
from taskcore.testing import wait_for_async
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e


@dataclass
class Run:
    status: int
    out: str
    err: str


async def taskcore(stack: Stack, *args: str, key: str = USER_KEY) -> Run:
    env = {**os.environ, "TASKCORE_API_URL": stack.api.url, "TASKCORE_API_KEY": key}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskcore.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


async def test_submit_then_watch_shows_progress_and_exits_0_on_completion(
    module_stack: Stack,
) -> None:
    submitted = await taskcore(
        module_stack, "submit", "diag.sleep", "--param", "seconds=3", "--quiet"
    )
    assert submitted.status == 0, submitted.err
    task_id = submitted.out.strip()
    watched = await taskcore(module_stack, "watch", task_id)
    assert watched.status == 0, watched.err
    assert watched.out.strip().splitlines()[-1].startswith("COMPLETED")
    assert '"slept_seconds"' in watched.out
    lines = watched.err.splitlines()
    assert any("RUNNING" in line and "elapsed_seconds=" in line for line in lines)
    assert "[##############################] 100%" in lines[-1]


async def test_the_exit_status_says_how_the_task_ended(module_stack: Stack) -> None:
    dead = await taskcore(
        module_stack, "submit", "diag.fail", "-p", "times=5", "-p", "retryable=false", "--watch"
    )
    assert dead.status == 1, dead.err
    assert dead.out.strip().splitlines()[-1].startswith("DEAD_LETTER")

    long = await taskcore(module_stack, "submit", "diag.sleep", "-p", "seconds=60", "--quiet")
    task_id = long.out.strip()
    watching = asyncio.create_task(taskcore(module_stack, "watch", task_id, "--json"))
    async with httpx.AsyncClient(
        base_url=module_stack.api.url, headers={"Authorization": f"Bearer {USER_KEY}"}
    ) as client:

        async def running() -> bool:
            task = (await client.get(f"/v1/tasks/{task_id}")).json()
            return bool(task["status"] == "RUNNING")

        await wait_for_async(running, timeout=20, message="the task to run")
        assert (await client.post(f"/v1/tasks/{task_id}/cancel")).status_code == 202
    cancelled = await watching
    assert cancelled.status == 3, cancelled.err
    events = [json.loads(line) for line in cancelled.out.splitlines()]
    assert events[0]["event"] == "state"
    assert events[-1]["data"]["status"] == "CANCELLED"


async def test_refusals_are_explained_and_exit_4(module_stack: Stack) -> None:
    invalid = await taskcore(module_stack, "submit", "diag.sleep", "-p", "seconds=-1")
    assert invalid.status == 4
    assert "parameters.seconds" in invalid.err
    unknown = await taskcore(module_stack, "watch", "0" * 32)
    assert unknown.status == 4
    assert "not_found" in unknown.err
    bad_key = await taskcore(module_stack, "submit", "diag.noop", key="wrong")
    assert bad_key.status == 4
    assert "unauthorized" in bad_key.err
    not_a_pair = await taskcore(module_stack, "submit", "diag.noop", "-p", "novalue")
    assert not_a_pair.status == 4
    assert "KEY=VALUE" in not_a_pair.err


async def test_watch_survives_an_api_restart_without_gaps_or_repeats(module_stack: Stack) -> None:
    submitted = await taskcore(module_stack, "submit", "diag.sleep", "-p", "seconds=6", "--quiet")
    task_id = submitted.out.strip()
    watching = asyncio.create_task(taskcore(module_stack, "watch", task_id, "--json"))
    async with httpx.AsyncClient(
        base_url=module_stack.api.url, headers={"Authorization": f"Bearer {USER_KEY}"}
    ) as client:

        async def running() -> bool:
            task = (await client.get(f"/v1/tasks/{task_id}")).json()
            return bool(task["status"] == "RUNNING")

        await wait_for_async(running, timeout=20, message="the task to run")
    # the API goes away mid-stream (ending its streams) and comes back on the same port
    await asyncio.to_thread(module_stack.api.restart)
    watched = await watching
    assert watched.status == 0, watched.err
    events = [json.loads(line) for line in watched.out.splitlines()]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    assert events[-1]["data"]["status"] == "COMPLETED"
    async with httpx.AsyncClient(
        base_url=module_stack.api.url, headers={"Authorization": f"Bearer {USER_KEY}"}
    ) as client:
        logged = (await client.get(f"/v1/tasks/{task_id}/events")).json()["items"]
    assert ids[1:] == [e["sequence"] for e in logged if e["sequence"] > ids[0]]
