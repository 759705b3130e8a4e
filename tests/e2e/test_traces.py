"""One trace per task tree, across HTTP and AMQP and all four services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
SERVICES = {"taskcore-api", "taskcore-executor", "taskcore-aggregator", "taskcore-event-bridge"}


@pytest.fixture
def traced_stack(stack_env: dict[str, str], tmp_path: Path, store: object) -> Iterator[Stack]:
    env = {**stack_env, "TASKCORE_TRACE_FILE": str(tmp_path / "spans.jsonl")}
    s = Stack(env=env, log_dir=tmp_path).start()
    try:
        yield s
    finally:
        s.stop()


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_fanout_tree_is_one_trace_joined_across_the_four_services(
    traced_stack: Stack, tmp_path: Path
) -> None:
    # Given the services exporting spans, when a user submits a parent with two children
    response = httpx.post(
        f"{traced_stack.api.url}/v1/tasks",
        headers=AUTH,
        json={"task_type": "diag.fanout", "parameters": {"count": 2}},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    parent = response.json()["id"]

    def finished() -> bool:
        task = httpx.get(f"{traced_stack.api.url}/v1/tasks/{parent}", headers=AUTH).json()
        return bool(task["status"] == "COMPLETED")

    wait_for(finished, timeout=30, message="the parent COMPLETED")
    children = httpx.get(
        f"{traced_stack.api.url}/v1/tasks", headers=AUTH, params={"parent_task_id": parent}
    ).json()["items"]
    tree = {parent, *(c["id"] for c in children)}
    assert len(tree) == 3
    path = tmp_path / "spans.jsonl"

    # then the tree's spans, from every service, carry one trace id
    def tree_spans() -> list[dict[str, Any]] | None:
        every = spans(path)
        executions = [s for s in every if s["attributes"].get("taskcore.task_id") in tree]
        if not executions:
            return None
        trace_ids = {s["trace_id"] for s in executions}
        joined = [s for s in every if s["trace_id"] in trace_ids]
        services = {s["service"] for s in joined}
        executed = {
            s["attributes"].get("taskcore.task_id")
            for s in joined
            if s["name"].startswith("execute ")
        }
        return joined if services >= SERVICES and executed >= tree else None

    joined = wait_for(tree_spans, timeout=15, message="spans of all four services")
    assert len({s["trace_id"] for s in joined}) == 1
    names = {s["name"] for s in joined}
    assert "execute diag.fanout" in names
    assert "execute diag.noop" in names
    assert any(n.startswith("fold task.completed") for n in names)
    # and every span but the root has its parent in the same trace
    ids = {s["span_id"] for s in joined}
    roots = [s for s in joined if s["parent_id"] is None or s["parent_id"] not in ids]
    assert len(roots) == 1, [(s["service"], s["name"]) for s in roots]
