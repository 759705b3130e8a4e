"""Bulk replay end to end: a dry run counts; a replay whose API process is killed midway
is resumed and replays each dead letter exactly once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack

from tests.e2e.test_dead_letters import (
    ADMIN,
    dead_letters,
    dead_task,
    event_types,
    stack_env,  # noqa: F401 - the dead-letter settings for this module's stack
    task,
    wait_status,
)

pytestmark = pytest.mark.e2e


def job(stack: Stack, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.api.url}/v1/dead-letters/replay-jobs/{job_id}", headers=ADMIN, timeout=10
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bulk(stack: Stack, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.api.url}/v1/dead-letters/replay",
        headers={**ADMIN, **({"Idempotency-Key": key} if key else {})},
        json=body,
        timeout=10,
    )


def test_a_bulk_replay_killed_midway_is_resumed_and_replays_each_exactly_once(
    stack: Stack,
) -> None:
    # Given ten tasks the executor dead-lettered
    dead = [dead_task(stack) for _ in range(10)]
    ids = {letter["id"] for _, letter in dead}
    body = {"filter": {"task_type": "diag.fail", "reason": "non_retryable"}, "rate_per_second": 2}
    # a dry run counts them and replays nothing
    dry = bulk(stack, {**body, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["matched"], dry.json()["would_replay"]) == (10, 10)
    assert {i["state"] for i in dead_letters(stack, task_type="diag.fail")["items"]} == {"pending"}

    # When a bulk replay at 2 per second is under way and the API process is killed
    started = bulk(stack, body, key="bulk-1")
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    assert started.json()["total"] == 10

    def some_done() -> bool:
        return bool(job(stack, job_id)["position"] >= 3)

    wait_for(some_done, timeout=20, interval=0.1, message="three replays done")
    stack.api.kill()
    stack.api.start()
    # and the admin re-sends the same request (same Idempotency-Key): the same job comes back
    again = bulk(stack, body, key="bulk-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == job_id
    assert again.json()["position"] < 10  # it really was interrupted midway

    # then it resumes and finishes, replaying each dead letter exactly once
    def finished() -> dict[str, Any] | None:
        current = job(stack, job_id)
        return current if current["state"] == "done" else None

    report = wait_for(finished, timeout=40, interval=0.2, message="the bulk replay done")
    assert report["counts"]["replayed"] == 10
    assert sum(report["counts"].values()) == 10
    assert {r["id"] for r in report["results"]} == ids
    assert {r["outcome"] for r in report["results"]} == {"replayed"}
    for task_id, _ in dead:
        done = wait_status(stack, task_id, "COMPLETED")
        assert done["attempts"] == 2
        log = [e["type"] for e in event_types(stack, task_id)]
        assert log.count("task.replayed") == 1
        assert log.count("task.started") == 2
    # and a different request under the same key is refused
    conflict = bulk(stack, {**body, "max": 3}, key="bulk-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert task(stack, dead[0][0])["status"] == "COMPLETED"
