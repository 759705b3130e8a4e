"""Browser tests: the operator console in real headless Chromium, on the real services.

Chromium is Debian's package (``scripts/ensure-chromium`` installs it), driven by
Playwright for Python through ``executable_path``, so no browser is downloaded. The tests
skip, saying why, only when no Chromium binary can be found.
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Request,
    Route,
    expect,
    sync_playwright,
)
from pymongo import MongoClient
from taskcore.testing.processes import Stack
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost
from taskcore_api.routes.console import CONSOLE_DIR, SECURITY_HEADERS

from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import ADMIN_KEY, API_KEYS, OTHER_KEY, USER_KEY

__all__ = ["ADMIN_KEY", "OTHER_KEY", "USER_KEY"]

# A user whose id is markup: the console must show it as text, never run it.
MARKUP_KEY = "user-key-markup"
MARKUP_USER = '<img src=x onerror="window.__injected=1">'
CONSOLE_KEYS: dict[str, Any] = {
    **API_KEYS,
    MARKUP_KEY: {"user_id": MARKUP_USER, "role": "user", "tier": "paid"},
}
# A laptop screen.
VIEWPORT = {"width": 1366, "height": 900}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_executable() -> str | None:
    """Debian's Chromium (or the one TASKCORE_CHROMIUM names)."""
    named = os.environ.get("TASKCORE_CHROMIUM")
    if named:
        return named if Path(named).exists() else None
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = chromium_executable()
    if path is None:
        pytest.skip(
            "no Chromium found: install Debian's `chromium` (scripts/ensure-chromium does) "
            "or set TASKCORE_CHROMIUM to a Chromium binary"
        )
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running
    # on this thread while it is started, and the asyncio tests that follow need it gone.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def console_stack(mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four services on their own vhost and database, shared by a module's tests
    (each works on its own tasks)."""
    vhost = create_vhost()
    database = f"tc_{uuid.uuid4().hex[:12]}"
    env = {
        "RABBITMQ_URL": url_for_vhost(RABBITMQ_URL, vhost),
        "MONGO_URL": mongo_url,
        "MONGO_DB": database,
        "TASKCORE_API_KEYS": json.dumps(CONSOLE_KEYS),
        "TASKCORE_ENABLE_DIAG": "1",
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
    }
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("console"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        print(stack.logs())
        with MongoClient(mongo_url) as client:
            client.drop_database(database)
        delete_vhost(vhost)


@pytest.fixture
def context(browser: Browser, console_stack: Stack) -> Iterator[BrowserContext]:
    """A fresh browser profile per test: its own session storage, so its own sign-in."""
    context = browser.new_context(base_url=console_stack.api.url, viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def watch_errors(page: Page) -> list[str]:
    """Uncaught script errors and Content-Security-Policy refusals, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return errors


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    errors = watch_errors(page)
    yield page
    assert not errors, f"the console failed in the browser: {errors}"


def sign_in(page: Page, key: str) -> None:
    """Sign in through the form, as a person does."""
    page.goto("/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key or JWT").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()


def signed_in(page: Page, key: str, role: str) -> None:
    """Open the console already signed in (what the form leaves in session storage), for
    tests about other pages: the form has its own tests, and this saves a round of page
    loads and API calls per test. Set once per tab, so a test may still change it."""
    page.add_init_script(
        "if (!sessionStorage.getItem('taskcore.console.credential')) {"
        f"sessionStorage.setItem('taskcore.console.credential', {json.dumps(key)});"
        f"sessionStorage.setItem('taskcore.console.role', {json.dumps(role)});"
        "}"
    )
    page.goto("/ui/")
    expect(page.get_by_role("heading", name="Tasks", exact=True)).to_be_visible()


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """Where a screenshot goes: docs/screenshots/ with TASKCORE_UPDATE_SCREENSHOTS=1 (the
    README shows them), else beside the test's other files, so a test run leaves the
    working tree alone."""
    folder = SCREENSHOTS if os.environ.get("TASKCORE_UPDATE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    path = screenshot_path(name, tmp_path)
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_accessible(page: Page) -> None:
    """No axe-core violations (WCAG 2.x A and AA rules: labels, names, contrast, roles,
    landmarks...) on the page as it stands."""
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def api(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def submit(client: httpx.Client, task_type: str, parameters: dict[str, Any]) -> str:
    response = client.post("/v1/tasks", json={"task_type": task_type, "parameters": parameters})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# ---- pages rendered from the contract's shapes, without a server ----------------------

CONTRACT_ORIGIN = "http://console.test"
CONTRACT_KEY = "contract-admin-key"
Handler = Callable[[Request], Any]


class ContractApi:
    """Serves the console's files from the package and answers ``/v1`` calls from
    handlers a test registers (``api.on("GET", "/v1/schedules", lambda request: {...})``),
    inside the browser (Playwright routing), for page states a real server reaches only
    slowly or by chance; test_console.py opens the same pages on the real routes.
    Every call is recorded, with the Authorization header it carried."""

    def __init__(self) -> None:
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.calls: list[tuple[str, str, dict[str, list[str]], str | None]] = []

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.handlers[(method, path)] = handler

    def calls_to(self, method: str, path: str) -> list[dict[str, list[str]]]:
        return [query for m, p, query, _ in self.calls if (m, p) == (method, path)]

    def handle(self, route: Route) -> None:
        request = route.request
        url = urlsplit(request.url)
        if url.path.startswith("/ui/"):
            return self._file(route, url.path.removeprefix("/ui/") or "index.html")
        self.calls.append(
            (request.method, url.path, parse_qs(url.query), request.headers.get("authorization"))
        )
        handler = self.handlers.get((request.method, url.path))
        if handler is None:
            return route.fulfill(
                status=404,
                json={"error": {"code": "not_found", "message": "No such route.", "details": []}},
            )
        answer = handler(request)
        if isinstance(answer, str):  # an event stream
            return route.fulfill(
                status=200, body=answer, headers={"Content-Type": "text/event-stream"}
            )
        return route.fulfill(status=200, json=answer)

    def _file(self, route: Route, name: str) -> None:
        path = (CONSOLE_DIR / name).resolve()
        if not path.is_file() or CONSOLE_DIR not in path.parents:
            return route.fulfill(status=404, body="not found")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        route.fulfill(
            status=200,
            body=path.read_bytes(),
            headers={"Content-Type": content_type, **SECURITY_HEADERS},
        )


class ContractOrigin:
    """Routes the shared context's requests to the current test's ContractApi."""

    def __init__(self) -> None:
        self.api = ContractApi()

    def handle(self, route: Route) -> None:
        self.api.handle(route)


@pytest.fixture(scope="module")
def contract_origin(browser: Browser) -> Iterator[tuple[BrowserContext, ContractOrigin]]:
    # One context per module (a context costs about half a second); each test opens its
    # own page, and session storage belongs to a page, so tests still start signed out.
    origin = ContractOrigin()
    context = browser.new_context(base_url=CONTRACT_ORIGIN, viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    context.route(f"{CONTRACT_ORIGIN}/**", origin.handle)
    yield context, origin
    context.close()


@pytest.fixture
def contract_api(contract_origin: tuple[BrowserContext, ContractOrigin]) -> ContractApi:
    api = ContractApi()
    api.on("GET", "/v1/tasks", lambda request: {"items": [], "next_cursor": None})
    api.on("GET", "/v1/dead-letters", lambda request: {"items": [], "next_cursor": None})
    api.on("GET", "/v1/task-types", lambda request: {"items": []})
    contract_origin[1].api = api
    return api


@pytest.fixture
def contract_page(
    contract_origin: tuple[BrowserContext, ContractOrigin], contract_api: ContractApi
) -> Iterator[Page]:
    """A page whose origin is served by ``contract_api``, signed in as an admin (the
    sign-in form itself is tested on the real services)."""
    page = contract_origin[0].new_page()
    errors = watch_errors(page)
    signed_in(page, CONTRACT_KEY, "admin")
    yield page
    page.close()
    assert not errors, f"the console failed in the browser: {errors}"
