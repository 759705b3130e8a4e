"""Subtasks count against their submitter's quota, like submissions."""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e

STACK_ENV = {"TASKCORE_QUOTA_PAID_PER_MINUTE": "5"}


def test_a_parent_over_its_submitters_quota_waits_instead_of_creating_children(
    module_stack: Stack,
) -> None:
    with ApiClient(module_stack.api.url, USER_KEY) as api:
        # The parent itself fits the quota; its 10 children would not
        parent = api.submit("diag.fanout", {"count": 10})

        waiting = api.wait_until(parent["id"], lambda t: t["status"] == "RETRYING")

        assert waiting["error"]["type"] == "RateLimitedError"
        assert api.tasks(parent_task_id=parent["id"]) == []
        # The children it waits to create are not counted in the tree yet: each retry
        # would count them again, until the tree limit refused a tree of 11 tasks.
        with MongoClient(module_stack.env["MONGO_URL"]) as client:
            db = client[module_stack.env["MONGO_DB"]]
            root = db["tasks"].find_one({"_id": parent["id"]}, {"exec": 1})
        assert root is not None
        assert root["exec"]["descendants"] == 0
        # and the user's next submission meets the same quota, untouched by the refusal
        for _ in range(4):
            api.submit("diag.noop")
        assert api.call("POST", "/v1/tasks", json={"task_type": "diag.noop"}).status == 429
