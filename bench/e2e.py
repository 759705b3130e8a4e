"""taskcore end to end: HTTP batch submit -> executor -> aggregator -> bridge -> subscriber.

    python -m bench.e2e --n 10000 [--executors 1] [--workflow-elements 1000] [--json out.json]

Starts the four services as processes on a fresh RabbitMQ vhost and database (an nx-27017
stand-in unless ``MONGO_URL`` is set), submits ``diag.noop`` and ``diag.sleep`` (10 ms)
tasks through ``POST /v1/tasks/batch``, flat out and paced, and measures until every task
is visibly complete: its ``io.taskcore.task.completed`` CloudEvent has reached a subscriber
on ``tasks.events.exchange`` (the bridge publishes only after the aggregator committed the
projection) and, checked once at the end by reading the ``tasks`` collection directly, the
projection says COMPLETED. Latency is per task: the completed CloudEvent's arrival at the
subscriber minus the moment its batch's request was sent.

Broker messages and store round trips per task are counted from every service's
``/metrics`` (before and after each run); CPU time per task from ``/proc``. In the same run,
with the services stopped, the raw aio-pika and Celery baselines (``bench/baselines``) run
on the same broker and store, and the table shows taskcore/raw and taskcore/Celery.

The workflow figure (``bench/workflow_pipeline.py``): steps per second for a three-step
pipeline with a ``--workflow-elements``-item for_each, as one workflow and as the same
work submitted as plain tasks, on the same stack after the other runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pymongo import AsyncMongoClient
from taskcore.messages.topology import EXTERNAL_EVENTS_EXCHANGE, declare_topology
from taskcore.testing.wait import wait_for_async
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

# Also runnable as a script (python bench/<name>.py): the repository root holds `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import (
    broker_version,
    celery_paced_latency,
    celery_with_mongo_backend,
    celery_without_backend,
    format_table,
    paced_latency,
    publish_consume_rate,
)
from bench.baselines.stats import latency_percentiles_ms, per_second
from bench.common import (
    CounterKey,
    Profiler,
    StackTarget,
    cancel_on_signals,
    counter_delta,
    cpu_ms_per_task,
    cpu_snapshot,
    env_assignment,
    format_counts,
    fresh_vhost,
    load_average,
    per_task_counts,
    print_profiles,
    rabbitmq_base_url,
    rabbitmq_pid,
    raise_if_cancelling,
    running_stack,
    scrape_counters,
    settled_counters,
    source_version,
    store_server,
)
from bench.hops import format_hops, measure_hops
from bench.workflow_pipeline import measure_pipeline, pipeline_report

COMPLETED_TYPE = "io.taskcore.task.completed"
TASK_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "noop": ("diag.noop", {}),
    "sleep10ms": ("diag.sleep", {"seconds": 0.01}),
}
MAX_BATCH = 1000
Figures = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """What one measured run submits, and how."""

    name: str
    n: int
    task_type: str = "diag.noop"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = MAX_BATCH
    rate: float | None = None  # tasks/s on a fixed schedule; None: flat out
    in_flight: int = 2  # concurrent batch requests when flat out
    timeout_s: float | None = None
    children: int = 0  # subtasks each task spawns (diag.fanout): they are awaited too
    # Flat out, at most this many tasks submitted and not yet visibly complete (None: no
    # bound, the whole run may queue up at once).
    window: int | None = None

    @property
    def tasks(self) -> int:
        """Every task the run completes, children included."""
        return self.n * (1 + self.children)

    @property
    def deadline_s(self) -> float:
        # A tenth of a slow machine's rate, so only a stuck run hits it.
        paced_s = self.n / self.rate if self.rate else 0.0
        return self.timeout_s or max(60.0, paced_s + self.tasks / 25)


# ---- the subscriber --------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    at: float  # perf_counter() when the completed CloudEvent arrived
    occurred_at: float  # epoch seconds the executor recorded the completion (the event's time)
    status: str
    parent: str | None


class CompletionWatcher:
    """A lean subscriber on ``tasks.events.exchange``: counts every delivery and records
    when each task's first completed CloudEvent arrived. Only completed events are parsed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received = 0
        self.completed: dict[str, Arrival] = {}
        self.children: dict[str, set[str]] = defaultdict(set)  # parent -> completed children
        self.errors: list[str] = []
        self.reconnected = False
        self._connection: AbstractRobustConnection | None = None

    async def __aenter__(self) -> CompletionWatcher:
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "bench-subscriber"}
        )
        channel = await self._connection.channel()
        await declare_topology(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(await channel.get_exchange(EXTERNAL_EVENTS_EXCHANGE))
        await queue.consume(self._on_message, no_ack=True)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        return self

    def _on_reconnect(self, *args: object) -> None:
        # The exclusive queue went with the old connection: events published meanwhile
        # never reach this subscriber.
        self.reconnected = True

    def check(self) -> None:
        """Raise if completions may have been missed, so waiting for them would hang."""
        if self.reconnected:
            raise RuntimeError(
                "the subscriber lost its broker connection (was RabbitMQ restarted?); "
                "CloudEvents published meanwhile are lost, so run it again"
            )

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        self.received += 1
        if b"task.completed" not in message.body:  # cheap filter before parsing
            return
        try:
            event = json.loads(message.body)
            if event["type"] != COMPLETED_TYPE:
                return
            task_id = str(event["subject"])
            occurred = datetime.fromisoformat(event["time"]).timestamp()
            data = event["data"]
            arrival = Arrival(at, occurred, str(data["status"]), data.get("parent_task_id"))
        except (ValueError, KeyError, TypeError) as exc:
            self.errors.append(f"{exc!r}: {message.body[:200]!r}")
            return
        self.completed.setdefault(task_id, arrival)
        if arrival.parent:
            self.children[arrival.parent].add(task_id)

    def has_all(self, ids: set[str], children: int = 0) -> bool:
        """Whether every task in ``ids`` and ``children`` children of each have completed."""
        if len(self.completed) < len(ids) * (1 + children) or not ids <= self.completed.keys():
            return False
        return all(len(self.children[i]) >= children for i in ids) if children else True

    def arrivals(self, ids: set[str], children: bool) -> dict[str, tuple[str, Arrival]]:
        """``{task id: (the id of the submitted task it belongs to, its arrival)}``."""
        out = {t: (t, self.completed[t]) for t in ids}
        if children:
            for parent in ids:
                out.update({c: (parent, self.completed[c]) for c in self.children[parent]})
        return out


# ---- submitting ------------------------------------------------------------------------


class SubmitFailed(RuntimeError):
    pass


class Unavailable(RuntimeError):
    """A 5xx or a dropped connection: the API asks to retry (safe with idempotency keys)."""


class BatchSubmitter:
    """POSTs batches to ``/v1/tasks/batch``; remembers when each task's batch was first sent.

    Every item carries an idempotency key, so a batch refused under overload (503) or cut
    off is retried safely, as a real client would (``retries`` counts them); the cost is
    one extra read per batch in the API.
    """

    def __init__(self, http: httpx.AsyncClient, *, attempts: int = 8) -> None:
        self.http = http
        self.sent_at: dict[str, float] = {}  # task id -> perf_counter() at its batch's send
        self.retries = 0
        self.in_flight_items = 0  # in requests not answered yet
        self._attempts = attempts

    async def submit(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        sent = time.perf_counter()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Unavailable),
            wait=wait_exponential(multiplier=0.5, max=8),
            stop=stop_after_attempt(self._attempts),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.retries += 1
                ids = await self._post(items)
        for task_id in ids:
            self.sent_at[task_id] = sent
        return ids

    async def _post(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        try:
            response = await self.http.post("/v1/tasks/batch", json={"tasks": list(items)})
        except httpx.TransportError as exc:
            raise Unavailable(repr(exc)) from exc
        if response.status_code >= 500:
            raise Unavailable(f"{response.status_code} {response.text[:300]}")
        if response.status_code >= 300:
            raise SubmitFailed(
                f"POST /v1/tasks/batch: {response.status_code} {response.text[:500]}"
            )
        ids = []
        for result in response.json()["results"]:
            if not result.get("ok"):
                raise SubmitFailed(f"a batch item was refused: {result.get('error')}")
            ids.append(result["task"]["id"])
        return ids

    async def flat_out(
        self,
        items: Sequence[Mapping[str, Any]],
        size: int,
        in_flight: int,
        room: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Everything as fast as the API takes it, ``in_flight`` requests at a time, each
        once ``room(len(batch))`` returns."""
        slots = asyncio.Semaphore(in_flight)

        async def one(chunk: Sequence[Mapping[str, Any]]) -> None:
            async with slots:
                if room is not None:
                    await room(len(chunk))
                self.in_flight_items += len(chunk)
                try:
                    await self.submit(chunk)
                finally:
                    self.in_flight_items -= len(chunk)

        await asyncio.gather(*(one(chunk) for chunk in _chunks(items, size)))

    async def paced(self, items: Sequence[Mapping[str, Any]], size: int, rate: float) -> float:
        """One batch every ``size / rate`` seconds, each sent on time whatever the previous
        one is doing; returns the worst lag behind the schedule, in seconds."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        worst = 0.0
        sending: list[asyncio.Task[list[str]]] = []
        try:
            for i, chunk in enumerate(_chunks(items, size)):
                due = begin + i * size / rate
                await asyncio.sleep(max(0.0, due - loop.time()))  # the schedule itself
                worst = max(worst, loop.time() - due)
                sending.append(asyncio.create_task(self.submit(chunk)))
            await asyncio.gather(*sending)
        finally:
            for task in sending:
                task.cancel()
        return worst


def _chunks(items: Sequence[Mapping[str, Any]], size: int) -> list[Sequence[Mapping[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def api_client(target: StackTarget) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=target.api_url,
        headers={"Authorization": f"Bearer {target.api_key}"},
        timeout=httpx.Timeout(120.0, connect=10.0),
        limits=httpx.Limits(max_connections=64),
    )


# ---- one measured run ------------------------------------------------------------------


async def completed_in_projection(target: StackTarget, ids: set[str]) -> int:
    """How many of ``ids`` the ``tasks`` collection shows as COMPLETED (read directly)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(target.mongo_url)
    try:
        tasks = client[target.mongo_db]["tasks"]
        ordered = sorted(ids)
        total = 0
        for i in range(0, len(ordered), MAX_BATCH):
            # find, not count_documents: the stand-in counts by scanning the whole collection.
            query = {"_id": {"$in": ordered[i : i + MAX_BATCH]}, "status": "COMPLETED"}
            total += len(await tasks.find(query, {"_id": 1}).to_list(None))
        return total
    finally:
        await client.close()


@dataclass
class Observed:
    """What one run saw, before it becomes figures."""

    workload: Workload
    started: float  # perf_counter()
    submitted_in: float  # seconds to send every batch
    lag: float  # worst lag behind a paced schedule, seconds
    wall_offset: float  # time.time() - perf_counter()
    sent_at: dict[str, float]  # submitted task id -> perf_counter() at its batch's send
    arrivals: dict[str, tuple[str, Arrival]]
    subscriber_received: int
    submit_retries: int  # batches sent again after a 5xx or a dropped connection
    subscriber_errors: list[str]
    projection_completed: int
    counters: dict[CounterKey, float]  # deltas over the run
    cpu: dict[str, float]  # CPU ms per task by process


async def run_workload(
    target: StackTarget,
    workload: Workload,
    *,
    extra_pids: Mapping[str, int] | None = None,
    profile_dir: Path | None = None,
) -> Figures:
    """Submit ``workload``, wait until every task's completion is visible, return figures."""
    return figures_of(await observe(target, workload, extra_pids or {}, profile_dir))


async def observe(
    target: StackTarget,
    workload: Workload,
    extra_pids: Mapping[str, int],
    profile_dir: Path | None,
) -> Observed:
    pids = {**target.pids(), **extra_pids, "bench": os.getpid()}
    # The services and the store stand-in are Python; the broker is not.
    profiled = {**target.pids(), **{k: v for k, v in extra_pids.items() if k == "store"}}
    async with CompletionWatcher(target.rabbitmq_url) as watcher, api_client(target) as http:
        submitter = BatchSubmitter(http)
        counters_before = await scrape_counters(http, target.services)
        cpu_before = cpu_snapshot(pids)
        with Profiler(profiled, profile_dir).recording() if profile_dir else _nothing():
            wall_offset = time.time() - time.perf_counter()
            started = time.perf_counter()
            lag = await submit_all(submitter, watcher, workload)
            submitted_in = time.perf_counter() - started
            ids = set(submitter.sent_at)

            async def all_visible() -> bool:
                watcher.check()
                return watcher.has_all(ids, workload.children)

            await wait_for_async(
                all_visible,
                timeout=workload.deadline_s,
                interval=0.05,
                message=f"{workload.tasks} completed CloudEvents ({workload.name})",
            )
        cpu_after = cpu_snapshot(pids)
        counters_after = await settled_counters(http, target.services)
        arrivals = watcher.arrivals(ids, bool(workload.children))
        return Observed(
            workload=workload,
            started=started,
            submitted_in=submitted_in,
            lag=lag,
            wall_offset=wall_offset,
            sent_at=submitter.sent_at,
            arrivals=arrivals,
            subscriber_received=watcher.received,
            submit_retries=submitter.retries,
            subscriber_errors=watcher.errors[:5],
            projection_completed=await completed_in_projection(target, set(arrivals)),
            counters=counter_delta(counters_before, counters_after),
            cpu=cpu_ms_per_task(cpu_before, cpu_after, workload.tasks),
        )


async def submit_all(
    submitter: BatchSubmitter, watcher: CompletionWatcher, workload: Workload
) -> float:
    """Submit the workload's tasks; the worst lag behind a paced schedule, in seconds."""
    parameters = dict(workload.parameters)
    if workload.children:
        parameters["count"] = workload.children
    run = uuid.uuid4().hex[:12]
    items = [
        {"task_type": workload.task_type, "parameters": parameters, "idempotency_key": f"{run}-{i}"}
        for i in range(workload.n)
    ]
    if workload.rate:
        return await submitter.paced(items, workload.batch_size, workload.rate)
    room = None if workload.window is None else _room(submitter, watcher, workload)
    await submitter.flat_out(items, workload.batch_size, workload.in_flight, room)
    return 0.0


def _room(
    submitter: BatchSubmitter, watcher: CompletionWatcher, workload: Workload
) -> Callable[[int], Awaitable[None]]:
    """Waits until ``more`` tasks fit in the workload's window of incomplete tasks."""
    window = workload.window or 0

    async def room(more: int) -> None:
        async def fits() -> bool:
            watcher.check()
            submitted = len(submitter.sent_at) + submitter.in_flight_items + more
            return submitted - len(watcher.completed) <= window

        await wait_for_async(fits, timeout=workload.deadline_s, message="room in the window")

    return room


def figures_of(seen: Observed) -> Figures:
    w = seen.workload
    n = w.tasks
    arrivals = seen.arrivals.values()
    sent = {t: seen.sent_at[origin] for t, (origin, _) in seen.arrivals.items()}
    last = max(a.at for _, a in arrivals)
    seconds = last - seen.started
    return {
        "baseline": w.name,
        "task_type": w.task_type,
        "parameters": dict(w.parameters),
        "mode": f"paced {w.rate:g}/s" if w.rate else "flat out",
        "n": n,
        "submitted": w.n,
        "batch_size": w.batch_size,
        "seconds": round(seconds, 3),
        "tasks_per_s": per_second(n, seconds),
        "submit_per_s": per_second(w.n, seen.submitted_in),
        "max_schedule_lag_ms": round(seen.lag * 1000, 3),
        "submit_retries": seen.submit_retries,
        "window": w.window,
        **latency_percentiles_ms([a.at - sent[t] for t, (_, a) in seen.arrivals.items()]),
        # Where the latency goes: until the executor recorded the completion, then the
        # aggregator's fold and the bridge's publish until the subscriber has it.
        "to_executed_p50_ms": _p50_ms(
            [a.occurred_at - (sent[t] + seen.wall_offset) for t, (_, a) in seen.arrivals.items()]
        ),
        "executed_to_visible_p50_ms": _p50_ms(
            [(a.at + seen.wall_offset) - a.occurred_at for _, a in arrivals]
        ),
        "completed_events_received": len(seen.arrivals),
        "completed_status_ok": sum(a.status == "COMPLETED" for _, a in arrivals),
        "projection_completed": seen.projection_completed,
        "subscriber_errors": seen.subscriber_errors,
        "per_task": per_task_counts(seen.counters, n),
        "subscriber_msgs_per_task": round(seen.subscriber_received / n, 3),
        "cpu_ms_per_task": seen.cpu,
    }


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _p50_ms(samples_s: list[float]) -> float:
    return latency_percentiles_ms(samples_s)["p50_ms"]


def completion_problems(figures: Figures) -> list[str]:
    """Why a run's figures cannot be trusted (every task must be visibly COMPLETED)."""
    n = figures["n"]
    problems = []
    for key in ("completed_events_received", "completed_status_ok", "projection_completed"):
        if figures[key] != n:
            problems.append(f"{key} = {figures[key]} of {n}")
    if figures["subscriber_errors"]:
        problems.append(f"unreadable events: {figures['subscriber_errors']}")
    return problems


# ---- the whole benchmark ---------------------------------------------------------------


def workloads(args: argparse.Namespace) -> list[Workload]:
    paced_n = max(1, int(args.paced_rate * args.paced_seconds))
    planned = []
    for kind in args.types:
        task_type, parameters = TASK_KINDS[kind]
        if "flat" in args.modes:
            planned.append(
                Workload(
                    f"taskcore.{kind}.flat",
                    args.n,
                    task_type,
                    parameters,
                    args.batch,
                    window=args.window or None,
                )
            )
        if "paced" in args.modes:
            planned.append(
                Workload(
                    f"taskcore.{kind}.paced",
                    paced_n,
                    task_type,
                    parameters,
                    args.paced_batch,
                    rate=args.paced_rate,
                )
            )
    return planned


async def measure_taskcore(
    target: StackTarget, planned: list[Workload], args: argparse.Namespace
) -> list[Figures]:
    extra = {"store": args.store_pid} if args.store_pid else {}
    if (beam := rabbitmq_pid()) is not None:
        extra["rabbitmq (shared)"] = beam
    await run_workload(target, Workload("warm-up", 100, batch_size=50), extra_pids=extra)
    results = []
    for i, workload in enumerate(planned):
        print(f"  {workload.name}: {workload.n} tasks ...", file=sys.stderr, flush=True)
        profile = args.py_spy if (args.py_spy and i == 0) else None
        results.append(await run_workload(target, workload, extra_pids=extra, profile_dir=profile))
    return results


async def measure_workflow(target: StackTarget, elements: int) -> list[Figures]:
    """The workflow figure: the pipeline as one workflow, then as plain tasks."""
    print(f"  workflow pipeline: {elements} elements ...", file=sys.stderr, flush=True)
    async with CompletionWatcher(target.rabbitmq_url) as watcher, api_client(target) as http:
        return await measure_pipeline(http, watcher, elements)


async def measure_baselines(
    rabbitmq_url: str, store_url: str, args: argparse.Namespace
) -> list[Figures]:
    figures: list[Figures] = []
    planned: dict[str, Callable[[], Awaitable[Figures]]] = {
        "raw_broker.publish_consume": lambda: publish_consume_rate(rabbitmq_url, args.raw_n),
        "raw_broker.paced_latency": lambda: paced_latency(
            rabbitmq_url, args.paced_rate, args.paced_seconds
        ),
    }
    for name, run in planned.items():
        print(f"  {name} ...", file=sys.stderr, flush=True)
        try:
            figures.append(await run())
        except Exception as exc:
            raise_if_cancelling()
            figures.append({"baseline": name, "note": f"FAILED: {exc!r}"})
    if args.celery_n:
        celery: dict[str, Callable[[], Figures]] = {
            "celery.no_backend": lambda: celery_without_backend(rabbitmq_base_url(), args.celery_n),
            "celery.mongo_backend": lambda: celery_with_mongo_backend(
                rabbitmq_base_url(), args.celery_n, store_url
            ),
        }
        if args.hops:  # Celery's answer to the per-hop run: the same rate, MongoDB backend
            celery["celery.paced_latency"] = lambda: celery_paced_latency(
                rabbitmq_base_url(), args.hops_rate, args.hops / args.hops_rate, store_url
            )
        for name, measure in celery.items():
            print(f"  {name} ...", file=sys.stderr, flush=True)
            try:
                figures.append(await asyncio.to_thread(measure))
            except Exception as exc:
                raise_if_cancelling()
                figures.append({"baseline": name, "note": f"FAILED: {exc!r}"})
    return figures


def ratios(taskcore: list[Figures], baselines: list[Figures]) -> dict[str, float]:
    """taskcore's figure divided by the baseline's: above 1 is more (throughput) or slower
    (latency)."""
    by_name = {f["baseline"]: f for f in taskcore + baselines if "note" not in f}
    raw = by_name.get("raw_broker.publish_consume")
    raw_paced = by_name.get("raw_broker.paced_latency")
    celery = {
        "celery": by_name.get("celery.no_backend"),
        "celery+mongo": by_name.get("celery.mongo_backend"),
    }
    out: dict[str, float] = {}
    for name, f in by_name.items():
        if not name.startswith("taskcore."):
            continue
        if name.endswith(".flat"):
            if raw:
                out[f"{name} throughput / raw publish+consume"] = (
                    f["tasks_per_s"] / raw["msgs_per_s"]
                )
            for label, c in celery.items():
                if c:
                    out[f"{name} throughput / {label}"] = f["tasks_per_s"] / c["tasks_per_s"]
        elif raw_paced and raw_paced.get("p50_ms"):
            for q in ("p50_ms", "p99_ms"):
                out[f"{name} {q[:3]} latency / raw paced"] = f[q] / raw_paced[q]
    return {k: round(v, 3) for k, v in out.items()}


def hops_ratio(hops: Mapping[str, Any], baselines: list[Figures]) -> dict[str, float]:
    """The per-hop run's submit-to-CloudEvent latency over Celery's submit-to-result-stored
    at the same rate."""
    celery = next((f for f in baselines if f["baseline"] == "celery.paced_latency"), None)
    if not hops or celery is None or "note" in celery or not celery.get("p50_ms"):
        return {}
    total = hops["total"]
    return {
        f"taskcore paced {q[:3]} (per-hop run) / celery+mongo paced": round(total[q] / celery[q], 3)
        for q in ("p50_ms", "p99_ms")
    }


def workflow_ratio(workflow: list[Figures]) -> dict[str, float]:
    by_name = {f["baseline"]: f["steps_per_s"] for f in workflow}
    plain = by_name.get("taskcore.workflow.plain_tasks")
    if not plain or "taskcore.workflow.pipeline" not in by_name:
        return {}
    key = "taskcore.workflow.pipeline steps/s / the same as plain tasks"
    return {key: round(by_name["taskcore.workflow.pipeline"] / plain, 3)}


def report(
    environment: Mapping[str, Any],
    results: list[Figures],
    ratio: Mapping[str, float],
    workflow: list[Figures] | None = None,
) -> str:
    lines = [
        f"taskcore e2e on {environment['broker']}, {environment['store']}, "
        f"{environment['cpus']} CPUs, {environment['executors']} executor(s), "
        f"load average {environment['load_average']} at start, source {environment['source']}",
        format_table(results),
        "",
        "ratios (taskcore / baseline):",
        *(f"  {k:<62}{v:>8.3f}" for k, v in ratio.items()),
    ]
    for f in results:
        if not f["baseline"].startswith("taskcore.") or "per_task" not in f:
            continue
        lines += [
            "",
            f"{f['baseline']} ({f['mode']}, n={f['n']}): submit->executed p50 "
            f"{f['to_executed_p50_ms']} ms, executed->visible p50 "
            f"{f['executed_to_visible_p50_ms']} ms, batches retried {f['submit_retries']}",
            format_counts(
                f["per_task"], {"subscriber deliveries per task": f["subscriber_msgs_per_task"]}
            ),
            "  CPU ms per task: "
            + ", ".join(f"{name} {ms:.3f}" for name, ms in f["cpu_ms_per_task"].items()),
        ]
    if workflow:
        lines += ["", *pipeline_report(workflow)]
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per flat-out run")
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="tasks per request, flat out")
    parser.add_argument(
        "--window", type=int, default=0, help="flat out: at most this many tasks incomplete"
    )
    parser.add_argument("--types", default="noop,sleep10ms", help="noop, sleep10ms")
    parser.add_argument("--modes", default="flat,paced", help="flat, paced")
    parser.add_argument("--paced-rate", type=float, default=200.0, help="tasks/s when paced")
    parser.add_argument("--paced-batch", type=int, default=20, help="tasks per request, paced")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument(
        "--workflow-elements",
        type=int,
        default=1000,
        help="elements of the workflow figure's for_each (0 skips it)",
    )
    parser.add_argument(
        "--hops", type=int, default=300, help="tasks for the per-hop breakdown (0 skips it)"
    )
    parser.add_argument("--hops-rate", type=float, default=50.0, help="their rate, tasks/s")
    parser.add_argument("--executors", type=int, default=1)
    parser.add_argument("--aggregators", type=int, default=1)
    parser.add_argument(
        "--service-env",
        type=env_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service, e.g. TASKCORE_FOLD_FLUSH_MS=20 (repeatable)",
    )
    parser.add_argument("--raw-n", type=int, help="messages, raw baseline (default: --n)")
    parser.add_argument(
        "--celery-n", type=int, help="tasks, Celery baseline (default: --n; 0 skips it)"
    )
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--py-spy", type=Path, help="profile each service in the first run")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    # The same count by default: flat-out latency grows with the backlog, so only runs of
    # the same size compare.
    args.raw_n = args.n if args.raw_n is None else args.raw_n
    args.celery_n = args.n if args.celery_n is None else args.celery_n
    args.types = [t.strip() for t in args.types.split(",") if t.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.types) - set(TASK_KINDS) or set(args.modes) - {"flat", "paced"}:
        parser.error(f"--types takes {', '.join(TASK_KINDS)}; --modes takes flat, paced")
    if not 1 <= args.batch <= MAX_BATCH or not 1 <= args.paced_batch <= MAX_BATCH:
        parser.error(f"batches hold 1 to {MAX_BATCH} tasks")
    if args.workflow_elements < 0:
        parser.error("--workflow-elements takes 0 (skip) or more")
    return args


async def _main(args: argparse.Namespace) -> int:
    cancel_on_signals()
    with store_server() as store, fresh_vhost("bench-e2e") as rabbitmq_url:
        args.store_pid = store.pid
        environment = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "broker": await broker_version(rabbitmq_url),
            "store": store.kind,
            "executors": args.executors,
            "aggregators": args.aggregators,
            "load_average": load_average(),
            "source": source_version(),
        }
        print("taskcore ...", file=sys.stderr, flush=True)
        with running_stack(
            rabbitmq_url,
            store.url,
            executors=args.executors,
            aggregators=args.aggregators,
            env=dict(args.service_env),
        ) as target:
            taskcore = await measure_taskcore(target, workloads(args), args)
            workflow = (
                await measure_workflow(target, args.workflow_elements)
                if args.workflow_elements
                else []
            )
            hops = await measure_hops(target, n=args.hops, rate=args.hops_rate) if args.hops else {}
        baselines = (
            [] if args.skip_baselines else await measure_baselines(rabbitmq_url, store.url, args)
        )
    ratio = ratios(taskcore, baselines) | hops_ratio(hops, baselines) | workflow_ratio(workflow)
    print(report(environment, taskcore + baselines, ratio, workflow))
    if hops:
        print(f"\nper-hop latency, {args.hops} diag.noop at {args.hops_rate:g}/s, one POST each:")
        print(format_hops(hops))
    if args.py_spy:
        print_profiles(args.py_spy)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "environment": environment,
                    "config": {
                        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                    },
                    "results": taskcore + baselines,
                    "workflow": workflow,
                    "hops": hops,
                    "ratios": ratio,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        print(f"\nwrote {args.json}")
    problems = [p for f in taskcore for p in completion_problems(f)]
    problems += [f"{f['baseline']}: {p}" for f in workflow for p in f["problems"]]
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; the stack, vhost and store were cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
