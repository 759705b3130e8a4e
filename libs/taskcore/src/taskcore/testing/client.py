"""One typed client of the HTTP API for tests, benchmarks and examples.

Every call asserts nothing: it returns what the API said (``Answer`` keeps the status and
the JSON), and the ``*_ok`` helpers raise ``ApiRefused`` with the body when the status is
not the expected one, so a failing test shows the API's own error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from taskcore.testing.wait import wait_for

OPEN = ("QUEUED", "RUNNING", "RETRYING")
Json = dict[str, Any]


class ApiRefused(AssertionError):
    def __init__(self, answer: Answer, expected: int) -> None:
        super().__init__(f"expected {expected}, got {answer.status}: {answer.body}")
        self.answer = answer


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: httpx.Headers

    def expect(self, status: int) -> Any:
        if self.status != status:
            raise ApiRefused(self, status)
        return self.body


class ApiClient:
    def __init__(self, base_url: str, key: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = self._http.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return Answer(response.status_code, body, response.headers)

    # ---- tasks -----------------------------------------------------------------------

    def submit(self, task_type: str, parameters: Json | None = None, **fields: Any) -> Json:
        """Submit one task; the accepted task (202)."""
        body = {"task_type": task_type, "parameters": parameters or {}, **fields}
        task: Json = self.call("POST", "/v1/tasks", json=body).expect(202)
        return task

    def task(self, task_id: str) -> Json:
        task: Json = self.call("GET", f"/v1/tasks/{task_id}").expect(200)
        return task

    def tasks(self, **filters: Any) -> list[Json]:
        """Every task the filters match, following the cursors."""
        items: list[Json] = []
        params = dict(filters)
        while True:
            page = self.call("GET", "/v1/tasks", params=params).expect(200)
            items += page["items"]
            if not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def events(self, task_id: str) -> list[Json]:
        items: list[Json] = []
        params: Json = {"limit": 1000}
        while True:
            page = self.call("GET", f"/v1/tasks/{task_id}/events", params=params).expect(200)
            items += page["items"]
            if not page["next_cursor"]:
                return items
            params["cursor"] = page["next_cursor"]

    def cancel(self, task_id: str) -> Json:
        task: Json = self.call("POST", f"/v1/tasks/{task_id}/cancel").expect(202)
        return task

    def wait_terminal(self, task_id: str, *, timeout: float = 30.0) -> Json:
        """The task once it is terminal (polling with a deadline)."""

        def terminal() -> Json | None:
            task = self.task(task_id)
            return None if task["status"] in OPEN else task

        found = wait_for(terminal, timeout=timeout, interval=0.1, message=f"{task_id} terminal")
        assert found is not None
        return found

    def wait_until(self, task_id: str, check: Any, *, timeout: float = 30.0) -> Json:
        """The task once ``check(task)`` holds."""

        def holds() -> Json | None:
            task = self.task(task_id)
            return task if check(task) else None

        found = wait_for(holds, timeout=timeout, interval=0.1, message=f"{task_id} condition")
        assert found is not None
        return found

    # ---- workflows -------------------------------------------------------------------

    def submit_workflow(self, workflow: Json) -> Json:
        task: Json = self.call("POST", "/v1/workflows", json=workflow).expect(202)
        return task
