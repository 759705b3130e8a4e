"""The workflow figure of ``bench/e2e.py``: steps per second for a three-step pipeline with
an N-element ``for_each``, against the same work submitted as plain tasks, on one stack.

The pipeline is the fault suite's (``tests/faults/workload.py`` ``pipeline()``, imported so
the benchmark runs the workflow the invariants are checked on): ``make`` (``diag.echo`` of
the list 0..N-1), ``each`` (``diag.echo`` of every element, a ``for_each``), ``total``
(``diag.echo`` of each's results). Both ways run N + 2 steps (make, N elements, total):

- **as one workflow**: one request; the clock stops when the workflow's completed
  CloudEvent reaches a subscriber (after its final state is committed). The workflow also
  runs its own task and the for_each container: N + 4 tasks in all;
- **as plain tasks**: the client does what the workflow does for it. It submits ``make``
  and waits for its completion, reads its result, submits the N elements in batches (at
  most 1,000 a request), waits for them all, reads their results back (by label, 500 a
  page), submits ``total`` with them, and waits for it. A client would do the same, so
  its requests and waits count.

Each run checks its outcome (``total`` got every element's result, in order); a wrong or
missing one is a problem, reported like the other runs' and failing the benchmark.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from taskcore.testing.wait import wait_for_async

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines.stats import per_second
from tests.faults.workload import pipeline

if TYPE_CHECKING:
    from bench.e2e import CompletionWatcher

Figures = dict[str, Any]
BATCH = 1000  # tasks per POST /v1/tasks/batch, the API's most
PAGE = 500  # tasks per GET /v1/tasks page, the API's most
WORKFLOW = "taskcore.workflow.pipeline"
PLAIN = "taskcore.workflow.plain_tasks"


class Run:
    """One way of running the pipeline: its requests, and when its last step was visible."""

    def __init__(self, http: httpx.AsyncClient, watcher: CompletionWatcher, deadline_s: float):
        self.http = http
        self.watcher = watcher
        self.deadline_s = deadline_s
        self.requests = 0
        self.started = time.perf_counter()

    async def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        self.requests += 1
        response = await self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def completed(self, ids: Sequence[str], what: str) -> float:
        """Seconds from the start until every task in ``ids`` completed visibly."""
        wanted = set(ids)

        async def arrived() -> bool:
            self.watcher.check()
            return wanted <= self.watcher.completed.keys()

        await wait_for_async(arrived, timeout=self.deadline_s, interval=0.01, message=what)
        return max(self.watcher.completed[i].at for i in wanted) - self.started


async def measure_pipeline(
    http: httpx.AsyncClient,
    watcher: CompletionWatcher,
    elements: int,
    *,
    timeout_s: float | None = None,
) -> list[Figures]:
    """The pipeline as one workflow, then as plain tasks: a figure set for each."""
    deadline_s = timeout_s or max(60.0, elements / 10)
    workflow = await _as_workflow(Run(http, watcher, deadline_s), elements)
    plain = await _as_plain_tasks(Run(http, watcher, deadline_s), elements)
    return [workflow, plain]


async def _as_workflow(run: Run, elements: int) -> Figures:
    submitted = await run.call("POST", "/v1/workflows", 202, json=pipeline(elements))
    seconds = await run.completed([submitted["id"]], "the workflow's completed CloudEvent")
    requests = run.requests
    done = await run.call("GET", f"/v1/tasks/{submitted['id']}", 200)
    total = ((done.get("result") or {}).get("steps") or {}).get("total")
    problems = _problems(done["status"], total, elements)
    return _figures(WORKFLOW, elements, seconds, requests, problems, tasks=elements + 4)


async def _as_plain_tasks(run: Run, elements: int) -> Figures:
    labels = {"bench_run": uuid.uuid4().hex[:12]}
    [make] = await _submit(run, [_echo(list(range(elements)), labels)])
    await run.completed([make], "make's completed CloudEvent")
    values = (await run.call("GET", f"/v1/tasks/{make}", 200))["result"]["value"]
    each = await _submit(run, [_echo(v, labels | {"stage": "each"}) for v in values])
    await run.completed(each, f"{elements} elements' completed CloudEvents")
    results = await _results(run, labels | {"stage": "each"}, each)
    [total] = await _submit(run, [_echo(results, labels)])
    seconds = await run.completed([total], "total's completed CloudEvent")
    requests = run.requests
    done = await run.call("GET", f"/v1/tasks/{total}", 200)
    problems = _problems(done["status"], done.get("result"), elements)
    return _figures(PLAIN, elements, seconds, requests, problems, tasks=elements + 2)


def _echo(value: Any, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"task_type": "diag.echo", "parameters": {"value": value}, "labels": dict(labels)}


async def _submit(run: Run, items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of ``items``, submitted in batches, in order."""
    ids: list[str] = []
    for start in range(0, len(items), BATCH):
        body = {"tasks": list(items[start : start + BATCH])}
        answer = await run.call("POST", "/v1/tasks/batch", 200, json=body)
        for result in answer["results"]:
            if not result.get("ok"):
                raise RuntimeError(f"a batch item was refused: {result.get('error')}")
            ids.append(result["task"]["id"])
    return ids


async def _results(run: Run, labels: Mapping[str, str], ids: Sequence[str]) -> list[Any]:
    """The results of the tasks ``ids`` (found by their labels), in the order of ``ids``."""
    query: dict[str, Any] = {"label": [f"{k}:{v}" for k, v in labels.items()], "limit": PAGE}
    by_id: dict[str, Any] = {}
    while True:
        page = await run.call("GET", "/v1/tasks", 200, params=query)
        by_id.update({task["id"]: task.get("result") for task in page["items"]})
        if not page["next_cursor"]:
            return [by_id.get(task_id) for task_id in ids]
        query["cursor"] = page["next_cursor"]


def _problems(status: str, total: Any, elements: int) -> list[str]:
    problems = [] if status == "COMPLETED" else [f"it ended {status}"]
    if total != {"value": [{"value": i} for i in range(elements)]}:
        problems.append("total did not get every element's result in order")
    return problems


def _figures(
    name: str, elements: int, seconds: float, requests: int, problems: list[str], *, tasks: int
) -> Figures:
    steps = elements + 2
    return {
        "baseline": name,
        "elements": elements,
        "steps": steps,
        "tasks": tasks,
        "requests": requests,
        "seconds": round(seconds, 3),
        "steps_per_s": per_second(steps, seconds),
        "problems": problems,
    }


def pipeline_report(figures: Sequence[Figures]) -> list[str]:
    """The report's workflow section."""
    by_name = {f["baseline"]: f for f in figures}
    workflow, plain = by_name[WORKFLOW], by_name[PLAIN]
    n = workflow["elements"]
    ratio = workflow["steps_per_s"] / plain["steps_per_s"] if plain["steps_per_s"] else math.nan
    return [
        f"workflow: a 3-step pipeline with a {n:,}-item for_each (diag.echo: make -> each -> "
        f"total), {workflow['steps']:,} steps, visible completion:",
        _line("as one workflow", workflow),
        _line("as plain tasks, the client chaining", plain),
        f"  {'workflow / plain tasks':<38}{ratio:>10.3f}",
    ]


def _line(label: str, f: Figures) -> str:
    return (
        f"  {label:<38}{f['steps_per_s']:>10,.1f} steps/s  {f['seconds']:>8.3f} s  "
        f"{f['tasks']:,} tasks, {f['requests']} requests"
    )
