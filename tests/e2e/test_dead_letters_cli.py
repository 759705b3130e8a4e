"""``taskcore dlq`` at a terminal, against the four services running as processes."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from taskcore.dlq_cli import EXIT_API_ERROR, add_dlq_arguments, run_dlq
from taskcore.testing.processes import Stack

from tests.e2e.conftest import ADMIN_KEY, USER_KEY
from tests.e2e.test_dead_letters import (  # the module_* fixtures: one stack for this module
    dead_task,
    module_db,  # noqa: F401
    module_stack,  # noqa: F401
    module_vhost,  # noqa: F401
    wait_status,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(module_stack: Stack) -> Stack:  # noqa: F811 - one stack for this module's tests
    return module_stack


def dlq(stack: Stack, *argv: str, key: str = ADMIN_KEY) -> tuple[int, str]:
    """Run one ``taskcore dlq`` command in-process; its exit status and output."""
    parser = argparse.ArgumentParser(prog="taskcore dlq")
    add_dlq_arguments(parser)
    args = parser.parse_args(["--url", stack.api.url, "--key", key, *argv])
    out = io.StringIO()
    status = run_dlq(args, out=out, err=out)
    return status, out.getvalue()


def test_an_operator_lists_shows_replays_and_discards_dead_letters(stack: Stack) -> None:
    since = ("--since", (datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    first_task, first = dead_task(stack)
    _, second = dead_task(stack)

    status, listing = dlq(stack, "list", "--reason", "non_retryable", *since)
    assert status == 0
    assert first["id"] in listing
    assert second["id"] in listing
    assert "2 dead letter(s)" in listing

    status, shown = dlq(stack, "show", first["id"])
    assert status == 0
    assert "reason: non_retryable" in shown
    assert "NonRetryableError: diag.fail: attempt 1 fails" in shown
    assert "Traceback (most recent call last)" in shown

    assert dlq(stack, "replay", first["id"]) == (0, f"{first['id']}: replayed\n")
    assert dlq(stack, "replay", first["id"]) == (0, f"{first['id']}: already_replayed\n")
    wait_status(stack, first_task, "COMPLETED")

    status, dry = dlq(stack, "replay", "--filter", "--task-type", "diag.fail", *since, "--dry-run")
    assert status == 0
    assert dry.startswith("1 pending dead letter(s) match")
    assert second["id"] in dry

    status, discarded = dlq(stack, "discard", second["id"], "--note", "bad input")
    assert (status, discarded) == (0, f"{second['id']}: discarded\n")

    third_task, _ = dead_task(stack)
    fourth_task, _ = dead_task(stack)
    status, report = dlq(
        stack, "replay", "--filter", "--task-type", "diag.fail", *since, "--rate", "50"
    )
    assert status == 0
    assert "2/2 (replayed 2)" in report
    wait_status(stack, third_task, "COMPLETED")
    wait_status(stack, fourth_task, "COMPLETED")


def test_the_taskcore_command_runs_dlq_and_refusals_exit_with_the_api_error_status(
    stack: Stack,
) -> None:
    task_id, letter = dead_task(stack)
    env = {**os.environ, "TASKCORE_API_URL": stack.api.url, "TASKCORE_API_KEY": ADMIN_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "dlq", "list", "--task", task_id, "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [letter["id"]]

    status, output = dlq(stack, "replay", "no-such:1")
    assert status == EXIT_API_ERROR
    assert "no-such:1: refused: HTTP 404" in output
    status, output = dlq(stack, "list", key=USER_KEY)
    assert status == EXIT_API_ERROR
    assert "HTTP 403" in output
    assert "(forbidden)" in output
