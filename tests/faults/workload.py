"""The mixed workload every fault test runs, submitted over HTTP, with what each task must
end as.

Kinds: ``noop``; ``sleep`` (0.2-1 s); ``flaky`` (fails once, then succeeds on a retry);
``doomed`` (a non-retryable failure: dead-lettered, the expected dead letters); ``fanout``
(``children`` noop subtasks, collect-all); ``workflow`` (a three-step pipeline: a list,
a ``for_each`` over it, and a step that reads the for_each's result); ``delayed`` (a noop
that may not start for 1-3 s: some wait in a delay queue, some in the store). Every item
carries an idempotency key, so a request retried after a failure creates each task once.
Besides the items, a run keeps a schedule firing every two seconds (``Schedule``) until
it verifies.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from taskcore.adapters.mongo import Store
from taskcore.testing import wait_for_async

from tests.e2e.conftest import USER_KEY

AUTH = {"Authorization": f"Bearer {USER_KEY}"}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "DEAD_LETTER", "COMPLETED_WITH_ERRORS")
# Per item kind: how many at scale 1, the task type, and the status it must end in.
KINDS: dict[str, tuple[int, str, str]] = {
    "noop": (30, "diag.noop", "COMPLETED"),
    "sleep": (14, "diag.sleep", "COMPLETED"),
    "flaky": (8, "diag.fail", "COMPLETED"),
    "doomed": (4, "diag.fail", "DEAD_LETTER"),
    "fanout": (2, "diag.fanout", "COMPLETED"),
    "workflow": (2, "workflow", "COMPLETED"),
    "delayed": (6, "diag.noop", "COMPLETED"),
}
# Delays of the ``delayed`` kind: 1 and 2 s fit a delay queue, the others wait in the store.
DELAYS_S = (1.0, 1.4, 2.0, 2.6)
SCHEDULE_CRON = "*/2 * * * * *"
# A workflow item: the workflow, its three steps' tasks (one a for_each container) and
# the container's elements.
WORKFLOW_ELEMENTS = 5
WORKFLOW_TASKS = 1 + 3 + WORKFLOW_ELEMENTS


def pipeline(elements: int = WORKFLOW_ELEMENTS) -> dict[str, Any]:
    """A list, a for_each over it, and a step that reads the for_each's results."""
    return {
        "name": "fault-pipeline",
        "steps": [
            {
                "id": "make",
                "task_type": "diag.echo",
                "parameters": {"value": list(range(elements))},
            },
            {
                "id": "each",
                "task_type": "diag.echo",
                "depends_on": ["make"],
                "for_each": {"$ref": "make.result.value"},
                "parameters": {"value": {"$ref": "item"}},
            },
            {
                "id": "total",
                "task_type": "diag.echo",
                "depends_on": ["each"],
                "parameters": {"value": {"$ref": "each.result"}},
            },
        ],
    }


@dataclass(frozen=True)
class Item:
    kind: str
    parameters: dict[str, Any]
    key: str

    @property
    def task_type(self) -> str:
        return KINDS[self.kind][1]

    @property
    def expected_status(self) -> str:
        return KINDS[self.kind][2]

    def submission(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "task_type": self.task_type,
            "parameters": self.parameters,
            "idempotency_key": self.key,
        }
        if self.kind == "delayed":
            body["delay_seconds"] = DELAYS_S[int(self.key.rsplit("-", 1)[-1]) % len(DELAYS_S)]
        return body


@dataclass(frozen=True)
class Workload:
    items: tuple[Item, ...]
    children: int

    @classmethod
    def mixed(cls, *, scale: int = 1, children: int = 20, seed: int = 7) -> Workload:
        rng = random.Random(seed)
        run = uuid.uuid4().hex[:8]
        items: list[Item] = []
        for kind, (count, _, _) in KINDS.items():
            for n in range(count * scale):
                items.append(Item(kind, _parameters(kind, rng, children), f"{run}-{kind}-{n}"))
        rng.shuffle(items)
        return cls(tuple(items), children)

    @property
    def total(self) -> int:
        """Tasks including the fan-outs' children and the workflows' steps."""
        fanouts = sum(i.kind == "fanout" for i in self.items)
        workflows = sum(i.kind == "workflow" for i in self.items)
        plain = len(self.items) - workflows
        return plain + self.children * fanouts + WORKFLOW_TASKS * workflows

    def waves(self, n: int) -> list[Workload]:
        """The items split into ``n`` workloads, to submit at different moments."""
        return [Workload(self.items[i::n], self.children) for i in range(n)]


def _parameters(kind: str, rng: random.Random, children: int) -> dict[str, Any]:
    if kind == "sleep":
        return {"seconds": round(rng.uniform(0.2, 1.0), 2)}
    if kind == "flaky":
        return {"times": 1}
    if kind == "doomed":
        return {"times": 9, "retryable": False}
    if kind == "fanout":
        return {"count": children}
    if kind == "workflow":
        return pipeline()
    return {}


@dataclass
class Submitted:
    """The top-level tasks a run created: task id -> its item."""

    items: dict[str, Item]

    def of_kind(self, kind: str) -> list[str]:
        return [task_id for task_id, item in self.items.items() if item.kind == kind]

    def merge(self, other: Submitted) -> Submitted:
        return Submitted({**self.items, **other.items})


async def submit(api_url: str, workload: Workload, *, within: float = 60.0) -> Submitted:
    """POST the workload's tasks to ``/v1/tasks/batch`` and its workflows to
    ``/v1/workflows``, again and again until every item is accepted (a request during an
    outage may fail; the keys make a repeat harmless)."""
    tasks = [item for item in workload.items if item.kind != "workflow"]
    submitted = await _submit_batch(api_url, tasks, within=within)
    for item in workload.items:
        if item.kind == "workflow":
            submitted = submitted.merge(await _submit_workflow(api_url, item, within=within))
    return submitted


async def _submit_workflow(api_url: str, item: Item, *, within: float) -> Submitted:
    done: Submitted | None = None
    headers = {**AUTH, "Idempotency-Key": item.key}

    async def accepted() -> bool:
        nonlocal done
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                response = await client.post(
                    f"{api_url}/v1/workflows", headers=headers, json=item.parameters
                )
        except httpx.HTTPError:
            return False
        if response.status_code >= 500:
            return False
        assert response.status_code == 202, response.text
        done = Submitted({response.json()["id"]: item})
        return True

    await wait_for_async(accepted, timeout=within, interval=0.5, message="workflow accepted")
    assert done is not None
    return done


async def _submit_batch(api_url: str, items: list[Item], *, within: float) -> Submitted:
    body = {"tasks": [item.submission() for item in items]}

    done: Submitted | None = None

    async def accepted() -> bool:
        nonlocal done
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                response = await client.post(f"{api_url}/v1/tasks/batch", headers=AUTH, json=body)
        except httpx.HTTPError:
            return False
        if response.status_code >= 500:
            return False
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert all(r["ok"] for r in results), results
        done = Submitted({r["task"]["id"]: item for r, item in zip(results, items, strict=True)})
        return True

    await wait_for_async(accepted, timeout=within, interval=0.5, message="batch accepted")
    assert done is not None
    return done


@dataclass
class Schedule:
    """The run's schedule: created when the run starts, deleted before it is verified."""

    id: str | None = None

    async def start(self, api_url: str, *, within: float = 60.0) -> None:
        body = {
            "name": "fault run",
            "cron": SCHEDULE_CRON,
            "task": {"task_type": "diag.noop"},
            "catch_up": "one",
        }
        self.id = str((await _until_answered(api_url, "POST", "/v1/schedules", body, within))["id"])

    async def stop(self, api_url: str, *, within: float = 60.0) -> None:
        if self.id is not None:
            await _until_answered(api_url, "DELETE", f"/v1/schedules/{self.id}", None, within)


async def _until_answered(
    api_url: str, method: str, path: str, body: Any, within: float
) -> dict[str, Any]:
    """The API's answer to a request repeated until it is not a 5xx (an outage)."""
    answer: dict[str, Any] = {}

    async def answered() -> bool:
        nonlocal answer
        try:
            async with httpx.AsyncClient(timeout=20) as client:
                response = await client.request(method, f"{api_url}{path}", headers=AUTH, json=body)
        except httpx.HTTPError:
            return False
        if response.status_code >= 500:
            return False
        assert response.status_code in (200, 201, 204, 404), response.text
        answer = response.json() if response.content else {}
        return True

    await wait_for_async(answered, timeout=within, interval=0.5, message=f"{method} {path}")
    return answer


async def count_terminal(store: Store) -> int:
    """Terminal tasks of the workload (the schedule's runs are not counted)."""
    terminal = {"status": {"$in": list(TERMINAL)}}
    # Counted apart rather than filtered with ``schedule_id: None``: the stand-in does not
    # match a missing field (tasks stored before schedules existed) against null.
    scheduled = {**terminal, "schedule_id": {"$gt": ""}}
    return await store.tasks.count_documents(terminal) - await store.tasks.count_documents(
        scheduled
    )


async def wait_terminal(store: Store, at_least: int, *, within: float = 60.0) -> int:
    """Wait until at least ``at_least`` tasks of the run's database are terminal."""

    seen = 0

    async def enough() -> bool:
        nonlocal seen
        seen = await count_terminal(store)
        return seen >= at_least

    try:
        await wait_for_async(enough, timeout=within, interval=0.1, message=f"{at_least} terminal")
    except AssertionError as exc:
        raise AssertionError(f"{exc} ({seen} terminal)") from exc
    return seen


async def expected_statuses(
    store: Store, submitted: Submitted, schedule: Schedule | None = None
) -> Mapping[str, str]:
    """Every task the run must end with (the fan-outs' children and the schedule's runs
    read from the store) and the status it must end in."""
    statuses = {task_id: item.expected_status for task_id, item in submitted.items.items()}
    parents = submitted.of_kind("fanout")
    async for child in store.tasks.find({"parent_task_id": {"$in": parents}}, {"_id": 1}):
        statuses[child["_id"]] = "COMPLETED"
    workflows = submitted.of_kind("workflow")
    async for member in store.tasks.find({"root_task_id": {"$in": workflows}}, {"_id": 1}):
        statuses[member["_id"]] = "COMPLETED"
    if schedule is not None and schedule.id is not None:
        async for run in store.tasks.find({"schedule_id": schedule.id}, {"_id": 1}):
            statuses[run["_id"]] = "COMPLETED"
    return statuses
