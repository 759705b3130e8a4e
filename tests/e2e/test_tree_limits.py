"""Bounds on what one submission can grow into, through the real services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

STACK_ENV = {
    "TASKCORE_MAX_CHILDREN": "5",
    "TASKCORE_MAX_DESCENDANTS": "8",
    "TASKCORE_MAX_DEPTH": "2",
    "TASKCORE_MAX_RESULT_BYTES": "200",
}


@pytest.fixture(scope="module")
def api(module_stack: Stack) -> Iterator[ApiClient]:
    with ApiClient(module_stack.api.url, USER_KEY) as client:
        yield client


def test_a_submission_asking_for_more_children_than_allowed_is_a_422(api: ApiClient) -> None:
    answer = api.call(
        "POST", "/v1/tasks", json={"task_type": "diag.fanout", "parameters": {"count": 6}}
    )

    assert answer.status == 422
    assert answer.body["error"]["code"] == "tree_limit_exceeded"


def test_the_nested_fanout_bomb_stops_at_the_depth_limit(api: ApiClient) -> None:
    # Each level asks for 2 children of the same kind: depth 3 is one level too deep
    bomb = {
        "count": 2,
        "child_type": "diag.fanout",
        "child_parameters": {
            "count": 2,
            "child_type": "diag.fanout",
            "child_parameters": {"count": 2},
        },
    }
    root = api.submit("diag.fanout", bomb)

    api.wait_terminal(root["id"], timeout=60)

    children = api.tasks(parent_task_id=root["id"])
    assert [c["status"] for c in children] == ["COMPLETED_WITH_ERRORS"] * 2
    grandchildren = [g for c in children for g in api.tasks(parent_task_id=c["id"])]
    assert len(grandchildren) == 4
    for grandchild in grandchildren:
        assert grandchild["status"] == "DEAD_LETTER"
        assert grandchild["error"]["type"] == "TreeLimitExceeded"
        assert not api.tasks(parent_task_id=grandchild["id"]), "nothing past the limit"


def test_a_tree_stops_growing_at_its_descendants_limit(api: ApiClient) -> None:
    # A root with 4 children, each wanting 2 more: 4 + 8 would pass 8 under one root
    root = api.submit(
        "diag.fanout", {"count": 4, "child_type": "diag.fanout", "child_parameters": {"count": 2}}
    )

    done = api.wait_terminal(root["id"], timeout=60)

    members = api.tasks(parent_task_id=root["id"])
    grandchildren = [g for c in members for g in api.tasks(parent_task_id=c["id"])]
    assert len(members) + len(grandchildren) == 8, "exactly up to the limit, even racing"
    refused = [c for c in members if c["status"] == "DEAD_LETTER"]
    assert len(refused) == 2
    assert all(c["error"]["type"] == "TreeLimitExceeded" for c in refused)
    assert done["status"] == "COMPLETED_WITH_ERRORS"


def test_a_result_larger_than_allowed_fails_the_task(api: ApiClient) -> None:
    task = api.submit("diag.echo", {"value": "x" * 500})

    done = api.wait_terminal(task["id"], timeout=30)

    assert done["status"] == "DEAD_LETTER"
    assert done["error"]["type"] == "ResultTooLarge"
