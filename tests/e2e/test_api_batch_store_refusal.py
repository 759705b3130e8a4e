"""A batch whose insert partly fails: the stored part is answered and dispatched at once,
the refused part answered per item, and the quota refunded only for what was not stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from taskcore.adapters.mongo import Store
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack

from tests.e2e.conftest import USER_KEY

pytestmark = pytest.mark.e2e


@pytest.fixture
async def refusing_store(store: Store) -> Store:
    """The task collection with a unique index an operator added: a second task with the
    same ``parameters.value`` is refused by the store (not an idempotent repeat)."""
    await store.tasks.create_index("parameters.value", unique=True, sparse=True)
    return store


def test_a_partly_refused_batch_answers_each_item_and_refunds_only_the_refused(
    stack_env: dict[str, str], tmp_path: Path, refusing_store: Store
) -> None:
    env = {**stack_env, "TASKCORE_QUOTA_PAID_PER_MINUTE": "3"}
    stack = Stack(env=env, log_dir=tmp_path).start()
    try:
        with ApiClient(stack.api.url, USER_KEY) as api:
            body = {
                "tasks": [
                    {"task_type": "diag.echo", "parameters": {"value": "same"}},
                    {"task_type": "diag.echo", "parameters": {"value": "same"}},
                ]
            }
            results = api.call("POST", "/v1/tasks/batch", json=body).expect(200)["results"]

            assert [r["ok"] for r in results] == [True, False]
            assert results[1]["error"]["code"] == "not_stored"
            assert "UNIQUE" not in results[1]["error"]["message"], "no store internals"
            stored = results[0]["task"]["id"]
            assert api.wait_terminal(stored, timeout=30)["status"] == "COMPLETED"
            # the quota counts the one stored task only: two more fit in the minute
            api.submit("diag.noop")
            api.submit("diag.noop")
            assert api.call("POST", "/v1/tasks", json={"task_type": "diag.noop"}).status == 429
    finally:
        stack.stop()
