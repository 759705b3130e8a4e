"""Console pages checked against the contract's documented shapes, in headless Chromium.

No server runs here: ``ContractApi`` serves the console's files and answers the ``/v1``
calls inside the browser. This covers states a real server reaches only slowly or by
chance (a schedule list to pause and resume, spend against budgets, a workflow mid-run,
paged label filters, JWT claims) and the pure parts of the page (graph layout, the
event-stream parser). test_console.py opens the same pages on the real services.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Request, expect

from tests.browser.conftest import (
    ContractApi,
    ContractOrigin,
    assert_accessible,
    screenshot,
    screenshot_path,
)

pytestmark = pytest.mark.e2e

NOW = "2026-12-04T10:00:00Z"


def task(task_id: str, status: str, **extra: Any) -> dict[str, Any]:
    """A task in the contract's shape."""
    return {
        "id": task_id,
        "user_id": "alice",
        "task_type": "diag.noop",
        "status": status,
        "parameters": {},
        "progress": None,
        "result": None,
        "error": None,
        "attempts": 1,
        "retry_count": 0,
        "max_attempts": 3,
        "priority": 0,
        "tier": "paid",
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": NOW,
        "finished_at": NOW if status in {"COMPLETED", "FAILED", "CANCELLED"} else None,
        "last_attempt_at": NOW,
        "next_attempt_at": None,
        "execution_node_id": "executor-1",
        "parent_task_id": None,
        "root_task_id": task_id,
        "cancel_requested": False,
        "subtasks": {
            "total": 0,
            "queued": 0,
            "running": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "dead_letter": 0,
        },
        "version": 3,
        **extra,
    }


# ---- the task list: labels and cursor paging ----------------------------------------


def test_the_task_list_filters_by_labels_and_pages_by_cursor_without_counting(
    contract_page: Page, contract_api: ContractApi
) -> None:
    pages = {
        None: (
            {"items": [task("t-1", "RUNNING", labels={"project_id": "42"})], "next_cursor": "c2"}
        ),
        "c2": (
            {"items": [task("t-2", "COMPLETED", labels={"project_id": "42"})], "next_cursor": None}
        ),
    }

    def tasks(request: Request) -> dict[str, Any]:
        cursor = re.search(r"cursor=([^&]+)", request.url)
        return pages[cursor.group(1) if cursor else None]

    contract_api.on("GET", "/v1/tasks", tasks)
    page = contract_page
    page.get_by_role("button", name="Add label filter").click()
    page.get_by_label("Label filter 1").fill("project_id:42")
    page.get_by_role("button", name="Add label filter").click()
    page.get_by_label("Label filter 2").fill("Not A Label")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("alert")).to_contain_text("A label filter is key:value")
    expect(page.get_by_label("Label filter 2")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Label filter 2").fill("scene_id:7")
    # The first page's rows may show already: wait for the request itself.
    with page.expect_request(lambda r: urlsplit(r.url).path == "/v1/tasks") as sent:
        page.get_by_role("button", name="Apply filters").click()
    expect(page.locator('tr[data-task-id="t-1"]')).to_contain_text("project_id: 42")
    assert parse_qs(urlsplit(sent.value.url).query)["label"] == ["project_id:42", "scene_id:7"]

    assert_accessible(page)
    page.get_by_role("button", name="Next page").click()
    expect(page.locator('tr[data-task-id="t-2"]')).to_be_visible()
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    assert contract_api.calls_to("GET", "/v1/tasks")[-1]["cursor"] == ["c2"]
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator('tr[data-task-id="t-1"]')).to_be_visible()
    for query in contract_api.calls_to("GET", "/v1/tasks"):
        assert int(query["limit"][0]) <= 50
        assert not {"count", "total", "skip", "offset"} & set(query)


def test_the_task_list_says_when_the_server_ignores_label_filters(
    contract_page: Page, contract_api: ContractApi
) -> None:
    contract_api.on(
        "GET", "/v1/tasks", lambda request: {"items": [task("t-1", "QUEUED")], "next_cursor": None}
    )
    contract_page.goto("/ui/#/tasks?label=project_id%3A42")
    expect(contract_page.get_by_text("This server does not filter by labels")).to_be_visible()


# ---- schedules ------------------------------------------------------------------------


def schedule(schedule_id: str, name: str, paused: bool) -> dict[str, Any]:
    return {
        "id": schedule_id,
        "name": name,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "task": {"task_type": "diag.noop", "parameters": {}},
        "overlap": "skip",
        "catch_up": "one",
        "paused": paused,
        "next_run_at": "2026-12-04T10:05:00Z",
        "last_run_at": "2026-12-04T10:00:00Z",
        "last_task_id": "t-last",
        "user_id": "alice",
    }


def test_the_schedules_page_lists_pauses_and_resumes(
    contract_page: Page, contract_api: ContractApi, tmp_path: Path
) -> None:
    schedules = {
        "s-1": schedule("s-1", "nightly-report", paused=False),
        "s-2": schedule("s-2", "hourly-sync", paused=True),
    }
    contract_api.on(
        "GET",
        "/v1/schedules",
        lambda request: {"items": list(schedules.values()), "next_cursor": None},
    )
    for sid in schedules:
        contract_api.on(
            "POST",
            f"/v1/schedules/{sid}/pause",
            lambda request, sid=sid: {**schedules[sid], "paused": True},
        )
        contract_api.on(
            "POST",
            f"/v1/schedules/{sid}/resume",
            lambda request, sid=sid: {**schedules[sid], "paused": False},
        )
    page = contract_page
    page.get_by_role("link", name="Schedules").click()
    nightly = page.locator('tr[data-schedule-id="s-1"]')
    expect(nightly).to_contain_text("nightly-report")
    expect(nightly).to_contain_text("*/5 * * * *")
    expect(nightly).to_contain_text("Active")
    expect(page.locator('tr[data-schedule-id="s-2"]')).to_contain_text("Paused")
    screenshot(page, "schedules", tmp_path)
    assert_accessible(page)

    page.get_by_role("button", name="Pause nightly-report").click()
    expect(page.locator('tr[data-schedule-id="s-1"]')).to_contain_text("Paused")
    expect(page.get_by_role("button", name="Resume nightly-report")).to_be_focused()
    page.get_by_role("button", name="Resume hourly-sync").click()
    expect(page.locator('tr[data-schedule-id="s-2"]')).to_contain_text("Active")
    assert [c[:2] for c in contract_api.calls if c[0] == "POST"] == [
        ("POST", "/v1/schedules/s-1/pause"),
        ("POST", "/v1/schedules/s-2/resume"),
    ]
    assert all(c[3] == "Bearer contract-admin-key" for c in contract_api.calls)


def test_pages_for_routes_the_server_lacks_say_so(contract_page: Page) -> None:
    contract_page.get_by_role("link", name="Schedules").click()
    expect(contract_page.get_by_text("Schedules are not available on this server.")).to_be_visible()
    contract_page.get_by_role("link", name="Usage").click()
    expect(contract_page.get_by_text("Usage is not available on this server.")).to_be_visible()
    expect(
        contract_page.get_by_text("Quotas and budgets are not available on this server.")
    ).to_be_visible()


# ---- usage and quotas -------------------------------------------------------------------


def test_the_usage_page_shows_spend_by_group_and_the_callers_budgets(
    contract_page: Page, contract_api: ContractApi, tmp_path: Path
) -> None:
    usage = {
        "items": [
            {
                "group": {"task_type": "llm.chat"},
                "prompt_tokens": 120000,
                "completion_tokens": 30500,
                "calls": 410,
                "cost": 0.9125,
            },
            {
                "group": {"task_type": "llm.structured"},
                "prompt_tokens": 48000,
                "completion_tokens": 9100,
                "calls": 96,
                "cost": 0.3012,
            },
        ],
        "currency": "USD",
    }
    quota = {
        "tier": "free",
        "quotas": {"per_minute": {"limit": 60, "used": 4, "resets_at": "2026-12-04T10:01:00Z"}},
        "budgets": {
            "daily_cost": {"limit": 2.0, "used": 1.2137, "resets_at": "2026-12-05T00:00:00Z"},
            "monthly_tokens": {
                "limit": 5000000,
                "used": 207600,
                "resets_at": "2027-01-01T00:00:00Z",
            },
        },
    }
    contract_api.on("GET", "/v1/usage", lambda request: usage)
    contract_api.on("GET", "/v1/quota", lambda request: quota)
    page = contract_page
    page.get_by_role("link", name="Usage").click()
    expect(page.locator("#usage .summary")).to_have_text(
        "506 calls, 207,600 tokens, 1.2137 USD in this range."
    )
    expect(page.locator("#usage-table tbody tr")).to_have_count(2)
    expect(page.locator("#usage-table")).to_contain_text("llm.structured")
    quota_rows = page.locator("#quota-table tbody tr")
    expect(quota_rows).to_have_count(3)
    expect(quota_rows.nth(1)).to_contain_text("budgets · daily cost")
    expect(quota_rows.nth(1).locator("meter")).to_have_attribute("value", "1.2137")
    screenshot(page, "usage", tmp_path)
    assert_accessible(page)

    page.get_by_label("provider").check()
    # The table is visible already: wait for the request itself, not for the page.
    with page.expect_request(lambda r: urlsplit(r.url).path == "/v1/usage") as sent:
        page.get_by_role("button", name="Show usage").click()
    query = parse_qs(urlsplit(sent.value.url).query)
    assert sorted(query["group_by"]) == ["provider", "task_type"]
    assert re.fullmatch(r"\d{4}-\d\d-01T00:00:00Z", query["from"][0])


# ---- a workflow's task page -----------------------------------------------------------

STEPS = {
    "fetch": {"status": "COMPLETED", "task_ids": ["t-fetch"], "depends_on": []},
    "parse": {"status": "COMPLETED", "task_ids": ["t-parse"], "depends_on": ["fetch"]},
    "chapters": {
        "status": "RUNNING",
        "task_ids": ["t-c1", "t-c2", "t-c3"],
        "depends_on": ["parse"],
    },
    "lint": {"status": "FAILED", "task_ids": ["t-lint"], "depends_on": ["parse"]},
    "summary": {"status": "PENDING", "task_ids": [], "depends_on": ["chapters", "lint"]},
    "notify": {"status": "CANCELLED", "task_ids": [], "depends_on": ["summary"]},
}


def test_a_workflow_task_page_draws_its_steps_from_the_view(
    contract_page: Page, contract_api: ContractApi, tmp_path: Path
) -> None:
    steps = {
        "fetch": {"status": "COMPLETED", "task_ids": ["t-fetch"], "depends_on": []},
        "parse": {"status": "COMPLETED", "task_ids": ["t-parse"], "depends_on": ["fetch"]},
        "lint": {"status": "FAILED", "task_ids": ["t-lint"], "depends_on": ["parse"]},
        "chapters": {"status": "COMPLETED", "task_ids": ["t-c1", "t-c2"], "depends_on": ["parse"]},
        "summary": {"status": "CANCELLED", "task_ids": [], "depends_on": ["chapters", "lint"]},
    }
    workflow = task(
        "wf-1",
        "COMPLETED_WITH_ERRORS",
        task_type="workflow",
        labels={"project_id": "42"},
        workflow={"name": "book-digest", "on_failure": "continue", "steps": steps},
        subtasks={
            "total": 6,
            "queued": 0,
            "running": 0,
            "completed": 4,
            "failed": 1,
            "cancelled": 1,
            "dead_letter": 0,
        },
    )
    children = [task(t, "COMPLETED") for t in ("t-fetch", "t-parse", "t-c1", "t-c2")]
    contract_api.on("GET", "/v1/tasks/wf-1", lambda request: workflow)
    contract_api.on(
        "GET",
        "/v1/tasks/wf-1/stream",
        lambda request: f"event: state\nid: 3\ndata: {json.dumps(workflow)}\n\n",
    )
    contract_api.on(
        "GET", "/v1/tasks/wf-1/events", lambda request: {"items": [], "next_cursor": None}
    )
    contract_api.on("GET", "/v1/tasks", lambda request: {"items": children, "next_cursor": None})
    page = contract_page
    page.goto("/ui/#/tasks/wf-1")
    graph = page.locator("#workflow-graph svg")
    for step, spec in steps.items():
        expect(graph.locator(f'g[data-step="{step}"]')).to_have_attribute(
            "data-status", spec["status"]
        )
    expect(page.locator("table.steps tbody tr")).to_have_count(5)
    expect(page.locator("#children tbody tr")).to_have_count(4)
    assert contract_api.calls_to("GET", "/v1/tasks")[-1]["parent_task_id"] == ["wf-1"]
    screenshot(page, "workflow", tmp_path)
    assert_accessible(page)


def test_the_graph_places_each_step_after_its_dependencies_in_its_status_colour(
    contract_page: Page, tmp_path: Path
) -> None:
    page = contract_page
    drawn = page.evaluate(
        """async (steps) => {
            const { renderGraph, layoutSteps } = await import("./graph.js");
            const holder = document.createElement("div");
            holder.id = "graph-under-test";
            holder.className = "graph-wrap";
            holder.append(renderGraph(steps, { title: "Fixture" }));
            document.querySelector("main").replaceChildren(holder);
            const layout = layoutSteps(steps);
            return {
              nodes: Object.fromEntries(layout.nodes.map((n) => [n.id, [n.layer, n.x, n.y]])),
              edges: layout.edges.map((e) => [e.from, e.to]),
            };
        }""",
        STEPS,
    )
    layer = {step: drawn["nodes"][step][0] for step in STEPS}
    assert layer == {"fetch": 0, "parse": 1, "chapters": 2, "lint": 2, "summary": 3, "notify": 4}
    for step, spec in STEPS.items():
        for dependency in spec["depends_on"]:
            assert drawn["nodes"][dependency][1] < drawn["nodes"][step][1]
    assert sorted(drawn["edges"]) == sorted(
        [dep, step] for step, spec in STEPS.items() for dep in spec["depends_on"]
    )

    graph = page.locator("#graph-under-test svg")
    for step, spec in STEPS.items():
        node = graph.locator(f'g[data-step="{step}"]')
        expect(node).to_have_attribute("data-status", spec["status"])
        expect(node).to_contain_text(spec["status"])
    fills = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("#graph-under-test g[data-step]")]
            .map((g) => [g.dataset.step, getComputedStyle(g.querySelector("rect")).fill]))"""
    )
    assert fills["fetch"] == fills["parse"]  # same status, same colour
    assert len({fills["parse"], fills["chapters"], fills["lint"], fills["summary"]}) == 4
    # A step that ran as one task links to it; a for_each step says how many it ran.
    expect(graph.get_by_role("link", name="Step lint: FAILED")).to_have_attribute(
        "href", "#/tasks/t-lint"
    )
    expect(graph.locator('g[data-step="chapters"]')).to_contain_text("3 tasks")
    expect(graph.locator("title").first).to_contain_text("6 steps")
    page.locator("#graph-under-test").screenshot(
        path=str(screenshot_path("workflow-graph", tmp_path))
    )


def test_the_event_stream_parser_handles_split_lines_comments_and_multiline_data(
    contract_page: Page,
) -> None:
    events = contract_page.evaluate(
        """async (chunks) => {
            const { SseParser } = await import("./sse.js");
            const parser = new SseParser();
            return chunks.flatMap((chunk) => parser.push(chunk));
        }""",
        [
            ": ping\r\n",
            "event: state\r",
            '\nid: 3\ndata: {"a":',
            " 1}\n\n",
            "retry: 1000\ndata: one\ndata: two\r\n\r\nevent: task.completed\nid: 4\ndata:x\n",
            "\n",
        ],
    )
    assert events == [
        {"type": "state", "data": '{"a": 1}', "id": "3"},
        {"type": "message", "data": "one\ntwo", "id": "3"},
        {"type": "task.completed", "data": "x", "id": "4"},
    ]


def test_the_console_works_from_the_keyboard_with_a_visible_focus(
    contract_page: Page, contract_api: ContractApi
) -> None:
    running = task("t-1", "RUNNING", progress={"percent": 40})
    contract_api.on("GET", "/v1/tasks", lambda request: {"items": [running], "next_cursor": None})
    contract_api.on("GET", "/v1/tasks/t-1", lambda request: running)
    contract_api.on(
        "GET", "/v1/tasks/t-1/events", lambda request: {"items": [], "next_cursor": None}
    )
    contract_api.on(
        "POST", "/v1/tasks/t-1/cancel", lambda request: {**running, "cancel_requested": True}
    )
    page = contract_page
    page.reload()
    link = page.get_by_role("link", name="Task t-1")
    expect(link).to_be_visible()

    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == "Task t-1":
            break
    expect(link).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused link shows no focus ring"

    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="diag.noop task")).to_be_focused()
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "cancel-task":
            break
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Yes, cancel it")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Cancellation requested", exact=True).first).to_be_visible()
    assert ("POST", "/v1/tasks/t-1/cancel") in [c[:2] for c in contract_api.calls]


def test_a_jwt_signs_in_and_the_page_names_its_subject(
    contract_origin: tuple[BrowserContext, ContractOrigin], contract_api: ContractApi
) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(b'{"sub":"carol","role":"admin"}').rstrip(b"=").decode()
    token = f"{header}.{claims}.signature"
    accepted = {"items": [], "next_cursor": None}

    def tasks(request: Request) -> dict[str, Any]:
        if request.headers.get("authorization") != f"Bearer {token}":
            raise AssertionError("the token was not sent as a bearer credential")
        return accepted

    contract_api.on("GET", "/v1/tasks", tasks)
    page = contract_origin[0].new_page()
    try:
        page.goto("/ui/")
        expect(page.get_by_label("API key or JWT")).to_be_focused()
        page.get_by_label("API key or JWT").fill(token)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()
        expect(page.locator("#holder")).to_have_text("carol · admin")
        assert token not in page.url
    finally:
        page.close()
