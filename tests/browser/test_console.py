"""The operator console in headless Chromium, over the real four services.

Each test signs in through the page as a person would and watches the page change on its
own (live list, SSE on the task page): the waits are Playwright's, on what the page shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from taskcore.testing import wait_for
from taskcore.testing.processes import Stack

from tests.browser.conftest import (
    ADMIN_KEY,
    MARKUP_KEY,
    MARKUP_USER,
    OTHER_KEY,
    USER_KEY,
    api,
    assert_accessible,
    screenshot,
    sign_in,
    signed_in,
    submit,
)

pytestmark = pytest.mark.e2e

# Long enough for the page to open before the task ends, short for the suite.
SLEEP_SECONDS = 3.0  # long enough to be seen running after a page load on a busy machine


def status_of(client: httpx.Client, task_id: str) -> str:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def wait_status(client: httpx.Client, task_id: str, status: str) -> None:
    wait_for(
        lambda: status_of(client, task_id) == status,
        timeout=20,
        interval=0.1,
        message=f"{task_id} {status}",
    )


def dead_lettered_task(stack: Stack, parameters: dict[str, Any] | None = None) -> str:
    """A task of alice's that failed without retry: dead-lettered after one attempt."""
    with api(stack, USER_KEY) as alice:
        task_id = submit(alice, "diag.fail", parameters or {"times": 1, "retryable": False})
        wait_status(alice, task_id, "DEAD_LETTER")
    return task_id


def test_signing_in_keeps_the_key_in_session_storage_only(
    page: Page, console_stack: Stack, tmp_path: Path
) -> None:
    page.goto("/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "sign-in", tmp_path)

    page.get_by_label("API key or JWT").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("The server does not accept this credential.")

    page.get_by_label("API key or JWT").fill(USER_KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('taskcore.console.credential')") == USER_KEY
    assert page.evaluate("localStorage.length") == 0
    assert USER_KEY not in page.url
    assert page.context.cookies() == []

    expect(page.get_by_role("link", name="Dead letters")).to_have_count(0)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0

    sign_in(page, ADMIN_KEY)  # the sign-in learns the role from what the API allows
    expect(page.locator("#holder")).to_have_text("API key · admin")
    expect(page.get_by_role("link", name="Dead letters")).to_be_visible()


def test_a_submitted_task_appears_in_the_live_list(
    page: Page, console_stack: Stack, tmp_path: Path
) -> None:
    signed_in(page, USER_KEY, "user")
    page.evaluate("window.__sameDocument = true")
    with api(console_stack, USER_KEY) as alice:
        task_id = submit(alice, "diag.sleep", {"seconds": SLEEP_SECONDS})

    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True, "the list reloaded the page"
    screenshot(page, "tasks", tmp_path)

    row.get_by_role("link", name=f"Task {task_id}").click()
    expect(page.get_by_role("heading", name="diag.sleep task")).to_be_visible()


def test_a_task_page_follows_the_task_to_completed_without_a_reload(
    page: Page, console_stack: Stack, tmp_path: Path
) -> None:
    signed_in(page, USER_KEY, "user")
    with api(console_stack, USER_KEY) as alice:
        task_id = submit(alice, "diag.sleep", {"seconds": SLEEP_SECONDS})
    page.goto(f"/ui/#/tasks/{task_id}")
    status = page.locator("#task-status .badge")
    expect(status).to_have_text(re.compile("QUEUED|RUNNING"))
    page.evaluate("window.__sameDocument = true")

    expect(status).to_have_text("COMPLETED", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator('#timeline li[data-type="task.completed"]')).to_have_count(1)
    expect(page.locator('#timeline li[data-type="task.started"]')).to_have_count(1)
    expect(page.locator("#task-result")).to_contain_text("slept_seconds")
    expect(page.locator("#live-state")).to_have_text("")
    screenshot(page, "task", tmp_path)
    assert_accessible(page)


def test_cancelling_from_a_task_page_stops_the_running_task(
    page: Page, console_stack: Stack
) -> None:
    signed_in(page, USER_KEY, "user")
    with api(console_stack, USER_KEY) as alice:
        task_id = submit(alice, "diag.sleep", {"seconds": 60})
        wait_status(alice, task_id, "RUNNING")
    page.goto(f"/ui/#/tasks/{task_id}")
    expect(page.locator("#task-status .badge")).to_have_text("RUNNING")
    page.get_by_role("button", name="Cancel task…").click()
    page.get_by_role("button", name="Yes, cancel it").click()
    expect(page.locator("#task-status .badge")).to_have_text("CANCELLED", timeout=15_000)
    expect(page.locator('#timeline li[data-type="task.cancelled"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Cancel task…")).to_have_count(0)


def test_a_failed_tasks_page_shows_its_error_and_an_admin_sees_the_traceback(
    page: Page, console_stack: Stack, context: Any
) -> None:
    task_id = dead_lettered_task(console_stack)

    signed_in(page, USER_KEY, "user")
    page.goto(f"/ui/#/tasks/{task_id}")
    error = page.locator("#task-error")
    expect(error).to_contain_text("NonRetryableError")
    expect(error).to_contain_text("diag.fail: attempt 1 fails")

    admin = context.browser.new_context(base_url=console_stack.api.url)
    try:
        admin_page = admin.new_page()
        signed_in(admin_page, ADMIN_KEY, "admin")
        admin_page.goto(f"/ui/#/tasks/{task_id}")
        traceback = admin_page.locator("#task-error .traceback pre")
        expect(traceback).to_contain_text("Traceback")
        expect(traceback).to_contain_text("NonRetryableError")
    finally:
        admin.close()


def test_an_admin_replays_a_dead_letter_from_its_page_and_the_task_completes(
    page: Page, console_stack: Stack, tmp_path: Path
) -> None:
    task_id = dead_lettered_task(console_stack)
    signed_in(page, ADMIN_KEY, "admin")

    page.get_by_role("link", name="Dead letters").click()
    row = page.locator(
        "#dead-letter-table tr", has=page.get_by_role("link", name=f"Task {task_id}")
    )
    expect(row).to_have_count(1)
    screenshot(page, "dead-letters", tmp_path)
    assert_accessible(page)
    row.get_by_role("link", name=re.compile("^Dead letter ")).click()

    expect(page.get_by_role("heading", name="Dead letter", exact=True)).to_be_visible()
    expect(page.locator("#dead-letter-state")).to_have_text("pending")
    expect(page.locator("#dead-letter-headers")).to_contain_text("x-task-id")
    expect(page.locator("#dead-letter-error")).to_contain_text("NonRetryableError")
    page.get_by_label("Replace the task's parameters").check()
    parameters = page.get_by_label("Parameters (JSON object)")
    parameters.fill("{times: 1")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("alert")).to_contain_text("Parameters is not valid JSON")
    expect(parameters).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#dead-letter-state")).to_have_text("pending")

    parameters.fill('{"times": 1, "retryable": true}')
    screenshot(page, "dead-letter", tmp_path)
    assert_accessible(page)
    page.get_by_role("button", name="Replay").click()

    expect(page.locator("#dead-letter-state")).to_have_text("replayed")
    page.get_by_role("link", name="Follow the replayed task").click()
    expect(page.locator("#task-status .badge")).to_have_text("COMPLETED", timeout=15_000)
    expect(page.locator(".slot-parameters pre")).to_contain_text('"retryable": true')
    expect(page.locator('#timeline li[data-type="task.replayed"]')).to_have_count(1)


def test_an_admin_discards_a_dead_letter_with_a_note(page: Page, console_stack: Stack) -> None:
    task_id = dead_lettered_task(console_stack)
    signed_in(page, ADMIN_KEY, "admin")
    page.goto(f"/ui/#/dead-letters?task_id={task_id}")
    page.get_by_role("link", name=re.compile("^Dead letter ")).click()
    page.get_by_label("Why (optional)").fill("known bad input")
    page.get_by_role("button", name="Discard…").click()
    page.get_by_role("button", name="Yes, discard it").click()
    expect(page.locator("#dead-letter-state")).to_have_text("discarded")
    expect(page.get_by_text("known bad input")).to_be_visible()
    page.get_by_role("link", name=f"Task {task_id}").click()
    expect(page.locator('#timeline li[data-type="task.discarded"]')).to_have_count(1)


def test_bulk_replay_shows_a_dry_run_before_it_replays(page: Page, console_stack: Stack) -> None:
    task_id = dead_lettered_task(console_stack)
    signed_in(page, ADMIN_KEY, "admin")
    page.goto(f"/ui/#/dead-letters?task_id={task_id}")
    replay = page.get_by_role("button", name=re.compile("^Replay"))
    expect(replay).to_be_disabled()

    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#bulk-report")).to_contain_text("1 pending dead letters match")
    expect(replay).to_have_text("Replay 1 dead letters")
    replay.click()
    expect(page.locator("#bulk-report")).to_contain_text("done", timeout=15_000)
    with api(console_stack, ADMIN_KEY) as admin:
        wait_status(admin, task_id, "COMPLETED")


def test_a_user_sees_no_dead_letter_pages_and_no_other_users_tasks(
    page: Page, console_stack: Stack
) -> None:
    with api(console_stack, OTHER_KEY) as bob:
        bobs = submit(bob, "diag.noop", {})
    with api(console_stack, USER_KEY) as alice:
        alices = submit(alice, "diag.noop", {})
        wait_status(alice, alices, "COMPLETED")

    signed_in(page, USER_KEY, "user")
    expect(page.locator(f'tr[data-task-id="{alices}"]')).to_be_visible()
    expect(page.locator(f'tr[data-task-id="{bobs}"]')).to_have_count(0)
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()
    expect(page.get_by_role("link", name="Dead letters")).to_have_count(0)

    page.goto(f"/ui/#/tasks/{bobs}")
    expect(page.get_by_role("status").filter(has_text="No task with this id")).to_be_visible()

    page.goto("/ui/#/dead-letters")
    expect(page.get_by_text("This page is for administrators.")).to_be_visible()
    # Even a page that believes it is an admin's gets nothing: the server refuses.
    page.evaluate("sessionStorage.setItem('taskcore.console.role', 'admin')")
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("This route is for administrators.")
    expect(page.locator("#dead-letter-table tbody tr")).to_have_count(0)


def test_values_from_the_api_are_shown_as_text_never_run(page: Page, console_stack: Stack) -> None:
    with api(console_stack, MARKUP_KEY) as marked:
        task_id = submit(marked, "diag.noop", {})
    signed_in(page, ADMIN_KEY, "admin")
    row = page.locator(f'tr[data-task-id="{task_id}"]')
    expect(row).to_contain_text(MARKUP_USER)
    page.goto(f"/ui/#/tasks/{task_id}")
    expect(page.locator(".fields")).to_contain_text(MARKUP_USER)
    page.goto(
        "/ui/#/tasks?task_type=" + "%3Cimg%20src%3Dx%20onerror%3D%22window.__injected%3D1%22%3E"
    )
    expect(page.get_by_label("Task type")).to_have_value(
        '<img src=x onerror="window.__injected=1">'
    )
    assert page.evaluate("window.__injected") is None
    assert page.locator("main img").count() == 0


def test_the_schedules_and_usage_pages_render_from_the_real_routes(
    page: Page, console_stack: Stack
) -> None:
    signed_in(page, USER_KEY, "user")

    page.get_by_role("link", name="Schedules").click()
    expect(page.get_by_role("heading", name="Schedules")).to_be_visible()
    expect(page.locator("#schedule-table")).to_be_visible()
    expect(page.get_by_text("Schedules are not available on this server.")).to_have_count(0)

    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage and spend")).to_be_visible()
    expect(page.locator("#usage .summary")).to_be_visible()
    expect(page.get_by_text("Usage is not available on this server.")).to_have_count(0)


def test_a_workflows_page_draws_each_step_in_its_status(page: Page, console_stack: Stack) -> None:
    workflow = {
        "name": "console-check",
        "steps": [
            {"id": "first", "task_type": "diag.noop"},
            {"id": "second", "task_type": "diag.noop", "depends_on": ["first"]},
            {"id": "third", "task_type": "diag.noop", "depends_on": ["first"]},
            {"id": "last", "task_type": "diag.noop", "depends_on": ["second", "third"]},
        ],
    }
    with api(console_stack, USER_KEY) as alice:
        response = alice.post("/v1/workflows", json=workflow)
        assert response.status_code in (200, 201, 202), response.text
        workflow_id = response.json()["id"]
        wait_status(alice, workflow_id, "COMPLETED")

    signed_in(page, USER_KEY, "user")
    page.goto(f"/ui/#/tasks/{workflow_id}")
    graph = page.locator("#workflow-graph svg")
    for step in ("first", "second", "third", "last"):
        expect(graph.locator(f'g[data-step="{step}"]')).to_have_attribute(
            "data-status", "COMPLETED"
        )
    expect(graph.locator("path.edge")).to_have_count(4)


def test_the_console_files_are_public_but_locked_down(console_stack: Stack) -> None:
    with httpx.Client(base_url=console_stack.api.url, timeout=10) as client:
        redirect = client.get("/ui")
        assert (redirect.status_code, redirect.headers["location"]) == (308, "ui/")
        index = client.get("/ui/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        policy = index.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert index.headers["x-content-type-options"] == "nosniff"
        module = client.get("/ui/app.js")
        assert "javascript" in module.headers["content-type"]
        again = client.get("/ui/app.js", headers={"If-None-Match": module.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/ui/../pyproject.toml").status_code == 404
        assert client.get("/ui/%2e%2e/routes/console.py").status_code == 404
        assert client.get("/ui/no-such-file.js").status_code == 404
        assert "/ui/" not in json.dumps(client.get("/openapi.json").json()["paths"])
