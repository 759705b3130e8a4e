"""A browser page on another origin follows a task to its end with EventSource, which
cannot send headers: a stream token in the URL, and CORS for that origin."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from pymongo import MongoClient
from taskcore.standin import free_port
from taskcore.testing.client import ApiClient
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost

from tests.browser.conftest import USER_KEY
from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import API_KEYS

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>follow</title>
<ol id="events"></ol>
<p id="state">connecting</p>
<script>
const q = new URLSearchParams(location.search);
const source = new EventSource(
  `${q.get("api")}/v1/tasks/${q.get("task")}/stream?token=${q.get("token")}`);
const list = document.getElementById("events");
const state = document.getElementById("state");
for (const type of ["state", "task.started", "task.progress", "task.completed"]) {
  source.addEventListener(type, (event) => {
    const item = document.createElement("li");
    item.textContent = type;
    list.append(item);
    if (type === "task.completed") { state.textContent = "completed"; source.close(); }
  });
}
source.onerror = () => { if (state.textContent !== "completed") state.textContent = "error"; };
</script>
"""


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static page served from another origin than the API's."""
    root = tmp_path_factory.mktemp("page")
    (root / "follow.html").write_text(PAGE)
    port = free_port()
    handler = partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def cors_stack(
    mongo_url: str, other_origin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    vhost = create_vhost()
    database = f"tc_{uuid.uuid4().hex[:12]}"
    env = {
        "RABBITMQ_URL": url_for_vhost(RABBITMQ_URL, vhost),
        "MONGO_URL": mongo_url,
        "MONGO_DB": database,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        "TASKCORE_CORS_ORIGINS": other_origin,
        "TASKCORE_STREAM_TOKEN_SECRET": uuid.uuid4().hex,
    }
    stack = Stack(env=env, log_dir=Path(tmp_path_factory.mktemp("cors")))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        with MongoClient(mongo_url) as client:
            client.drop_database(database)
        delete_vhost(vhost)


def test_an_eventsource_on_another_origin_follows_a_task_to_its_end_with_a_stream_token(
    browser: Browser, cors_stack: Stack, other_origin: str
) -> None:
    with ApiClient(cors_stack.api.url, USER_KEY) as api:
        task = api.submit("diag.sleep", {"seconds": 3})  # still running when the page opens
        token = api.call("POST", f"/v1/tasks/{task['id']}/stream-token").expect(200)["token"]
    page = browser.new_page()
    try:
        page.goto(
            f"{other_origin}/follow.html?api={cors_stack.api.url}&task={task['id']}&token={token}"
        )

        expect(page.locator("#state")).to_have_text("completed", timeout=30_000)
        seen = page.locator("#events li").all_text_contents()
        assert seen[0] == "state"
        assert "task.completed" in seen
    finally:
        page.close()


def test_without_the_token_the_page_gets_no_stream(
    browser: Browser, cors_stack: Stack, other_origin: str
) -> None:
    with ApiClient(cors_stack.api.url, USER_KEY) as api:
        task = api.submit("diag.sleep", {"seconds": 3})  # still running when the page opens
    page = browser.new_page()
    try:
        page.goto(f"{other_origin}/follow.html?api={cors_stack.api.url}&task={task['id']}&token=x")

        expect(page.locator("#state")).to_have_text("error", timeout=15_000)
        assert page.locator("#events li").count() == 0
    finally:
        page.close()
