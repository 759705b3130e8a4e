"""Celery 5 on the same RabbitMQ and store: the figure taskcore is usually compared with.

A real prefork worker (``celery worker --concurrency 2``) runs as a subprocess in a fresh
RabbitMQ vhost, with ``task_acks_late=True`` and one no-op task. The submitting side calls
``delay()`` for every task (Celery's default, unconfirmed publishing), then waits for them:

- with the MongoDB result backend, until the backend collection holds every result; the end
  time is the newest ``date_done``, and each task's submit-to-result latency is its
  ``date_done`` minus the wall-clock time just before its ``delay()``. The worker stamps
  ``date_done`` just before it writes the result, and it is a BSON datetime (millisecond
  resolution), so each latency may read up to 1 ms short and leaves out the write itself;
- paced (``celery_paced_latency``): the same, submitting at a fixed rate below capacity, so
  the latency is the stack's own rather than time spent queued behind a burst;
- without a result backend, until the worker has logged every "succeeded" line (Celery
  logs one per task at INFO level in both variants, so both pay the same logging cost).

Blocking code (Celery's client and PyMongo's sync client are blocking): from async code,
call these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from taskcore.standin import MongoStandin
from taskcore.testing.rabbit import create_vhost, delete_vhost, url_for_vhost
from taskcore.testing.wait import wait_for

from .celery_app import NOOP_TASK, make_app
from .celery_worker import CONCURRENCY, running_worker
from .stats import latency_percentiles_ms, per_second

WARMUP_TASKS = 20


def _require_positive(n: int) -> None:
    if n <= 0:
        raise ValueError(f"n must be positive; got {n}")


def _deadline(n: int) -> float:
    # A tenth of the reference rate (~1,100 tasks/s), so only a stuck run hits it.
    return max(60.0, n / 110)


@contextlib.contextmanager
def _broker_vhost(rabbitmq_url: str) -> Iterator[str]:
    vhost = create_vhost("bench-celery")
    try:
        yield url_for_vhost(rabbitmq_url, vhost)
    finally:
        delete_vhost(vhost)


@contextlib.contextmanager
def mongo_store(mongo_url: str | None) -> Iterator[str]:
    """The given store's URL, or an nx-27017 stand-in started (and stopped) around the block."""
    if mongo_url:
        yield mongo_url
        return
    with tempfile.TemporaryDirectory(prefix="bench-nx-") as workdir:
        standin = MongoStandin(workdir=Path(workdir))
        standin.start()
        try:
            yield standin.url
        finally:
            standin.stop()


@contextlib.contextmanager
def _client_app(broker_url: str, backend_url: str | None, database: str | None) -> Iterator[Any]:
    """The submitting side's app; its pooled broker connections are closed on the way out."""
    app = make_app(broker_url, backend_url, database)
    try:
        yield app
    finally:
        # app.close() only drops its reference to the pool, leaving the sockets open.
        app.amqp.producer_pool.force_close_all()
        app.pool.force_close_all()
        app.close()


def _submit(app: Any, n: int) -> dict[str, float]:
    """``delay()`` ``n`` no-op tasks; returns each task id with its wall-clock submit time."""
    noop = app.tasks[NOOP_TASK]
    submitted: dict[str, float] = {}
    for _ in range(n):
        at = time.time()
        submitted[noop.delay().id] = at
    return submitted


def _store_figures(
    collection: Collection[dict[str, Any]], submitted: dict[str, float], started: float
) -> tuple[float, list[float]]:
    """End time (newest ``date_done``) and submit-to-result latencies of the measured tasks."""
    done_at = {
        doc["_id"]: doc["date_done"].replace(tzinfo=UTC).timestamp()
        for doc in collection.find({}, {"date_done": 1})
        if doc["_id"] in submitted
    }
    latencies = [done_at[task_id] - at for task_id, at in submitted.items()]
    return max(done_at.values()) - started, latencies


def _store_kind(client: MongoClient[dict[str, Any]]) -> str:
    build = client.admin.command("buildInfo")
    if build.get("process") == "nx_27017":
        return "nx-27017 stand-in"
    return f"MongoDB {build.get('version')}"


@dataclass(frozen=True)
class _ResultsRun:
    """A warmed-up worker storing results in ``collection``, and the app to submit with."""

    app: Any
    collection: Collection[dict[str, Any]]
    store: str

    def wait_for_results(self, n: int) -> None:
        wait_for(
            lambda: self.collection.count_documents({}) >= WARMUP_TASKS + n,
            timeout=_deadline(n),
            interval=0.1,
            message=f"{n} task results in the backend",
        )


@contextlib.contextmanager
def _results_run(rabbitmq_url: str, mongo_url: str | None) -> Iterator[_ResultsRun]:
    database = f"bench_celery_{uuid.uuid4().hex[:10]}"
    with (
        mongo_store(mongo_url) as store_url,
        MongoClient[dict[str, Any]](store_url, tz_aware=False) as client,
        _broker_vhost(rabbitmq_url) as broker_url,
    ):
        collection = client[database]["celery_taskmeta"]
        try:
            with (
                _client_app(broker_url, store_url, database) as app,
                running_worker(broker_url, store_url, database),
            ):
                run = _ResultsRun(app, collection, _store_kind(client))
                _submit(app, WARMUP_TASKS)
                run.wait_for_results(0)
                yield run
        finally:
            client.drop_database(database)


def celery_with_mongo_backend(
    rabbitmq_url: str, n: int, mongo_url: str | None = None
) -> dict[str, Any]:
    """End-to-end tasks/s for a burst of ``n`` tasks, results stored in MongoDB.

    Every task is submitted at once, so the latencies are mostly time spent queued behind
    the burst; ``celery_paced_latency`` gives the latency below capacity.
    """
    _require_positive(n)
    with _results_run(rabbitmq_url, mongo_url) as run:
        started = time.time()
        submitted = _submit(run.app, n)
        submit_s = time.time() - started
        run.wait_for_results(n)
        seconds, latencies = _store_figures(run.collection, submitted, started)
    return {
        "baseline": "celery.mongo_backend",
        "n": n,
        "concurrency": CONCURRENCY,
        "store": run.store,
        "seconds": round(seconds, 3),
        "tasks_per_s": per_second(n, seconds),
        "submit_per_s": per_second(n, submit_s),
        "latency_resolution_ms": 1,
        **latency_percentiles_ms(latencies),
    }


def _submit_paced(app: Any, total: int, per_s: float) -> tuple[dict[str, float], float]:
    """Submit on a fixed schedule; returns the submit times and the worst lag behind it (s)."""
    noop = app.tasks[NOOP_TASK]
    submitted: dict[str, float] = {}
    begin = time.time()
    worst_lag = 0.0
    for i in range(total):
        due = begin + i / per_s
        # Pacing the load, not waiting for a condition: this sleep is the schedule.
        time.sleep(max(0.0, due - time.time()))
        at = time.time()
        worst_lag = max(worst_lag, at - due)
        submitted[noop.delay().id] = at
    return submitted, worst_lag


def celery_paced_latency(
    rabbitmq_url: str, rate: float, seconds: float, mongo_url: str | None = None
) -> dict[str, Any]:
    """Submit-to-result-stored latency at a fixed submit rate (tasks/s), MongoDB backend."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive; got {rate} and {seconds}")
    total = max(1, int(rate * seconds))
    with _results_run(rabbitmq_url, mongo_url) as run:
        submitted, lag = _submit_paced(run.app, total, rate)
        run.wait_for_results(total)
        _, latencies = _store_figures(run.collection, submitted, min(submitted.values()))
    return {
        "baseline": "celery.paced_latency",
        "n": total,
        "target_tasks_per_s": rate,
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "store": run.store,
        "max_schedule_lag_ms": round(lag * 1000, 3),
        "latency_resolution_ms": 1,
        **latency_percentiles_ms(latencies),
    }


def celery_without_backend(rabbitmq_url: str, n: int) -> dict[str, Any]:
    """End-to-end tasks/s with results ignored: the broker and the worker only."""
    _require_positive(n)
    with (
        _broker_vhost(rabbitmq_url) as broker_url,
        _client_app(broker_url, None, None) as app,
        running_worker(broker_url, None, None) as worker,
    ):
        _submit(app, WARMUP_TASKS)
        wait_for(
            lambda: worker.count_succeeded() >= WARMUP_TASKS,
            timeout=60,
            message="the warm-up tasks",
        )
        started = time.time()
        _submit(app, n)
        submit_s = time.time() - started
        wait_for(
            lambda: worker.count_succeeded() >= WARMUP_TASKS + n,
            timeout=_deadline(n),
            message=f"{n} tasks to succeed",
        )
        seconds = time.time() - started
    return {
        "baseline": "celery.no_backend",
        "n": n,
        "concurrency": CONCURRENCY,
        "seconds": round(seconds, 3),
        "tasks_per_s": per_second(n, seconds),
        "submit_per_s": per_second(n, submit_s),
    }
