"""How fast executors get through a backlog of ``diag.noop`` tasks, beside the raw broker.

    python bench/executor_throughput.py [--n 3000] [--executors 1,2] [--json out.json]

In one run, on one RabbitMQ vhost and one store (an nx-27017 stand-in unless ``MONGO_URL``
is set): first the raw broker's consume rate (``bench/baselines/raw_broker.consume_rate``:
plain aio-pika acking a pre-filled queue of persistent messages); then, for each executor
count, a fresh database is filled with ``n`` queued ``diag.noop`` tasks through the API's
dispatch path (``submit_tasks``) with only the aggregator running; once their submissions
are folded, that many executor processes start and drain the backlog.

The executor rate is ``n`` over the time from the first ``task.started`` to the last
``task.completed`` in the event log (stamped by the executors, so the aggregator's lag does
not count); every task is checked COMPLETED in its projection, with one completion each.
"until projected" is the wall-clock rate until the last projection said COMPLETED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika

# Run as a file (`python bench/executor_throughput.py`) or as a module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import AsyncMongoClient
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.submission import NewTask, submit_tasks
from taskcore.testing.processes import ServiceProcess
from taskcore.testing.wait import wait_for_async

from bench.baselines import broker_version, consume_rate
from bench.baselines.stats import per_second
from bench.common import (
    Profiler,
    StoreServer,
    cancel_on_signals,
    fresh_vhost,
    stack_env,
    store_server,
)

SUBMIT_CHUNK = 500
Figures = dict[str, Any]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="diag.noop tasks per run")
    parser.add_argument(
        "--executors", default="1,2", help="executor process counts, comma-separated"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--py-spy", type=Path, help="profile the executors, aggregator and store while they drain"
    )
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    args.executor_counts = [int(x) for x in args.executors.split(",") if x.strip()]
    return args


@contextlib.contextmanager
def _log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def _database(mongo_url: str) -> AsyncIterator[Store]:
    store = Store(AsyncMongoClient(mongo_url, tz_aware=True), f"bench_{uuid.uuid4().hex[:10]}")
    try:
        yield store
    finally:
        await store.client.drop_database(store.db.name)
        await store.close()


@contextlib.contextmanager
def _processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.stop()


async def _fill_backlog(store: Store, rabbitmq_url: str, n: int) -> None:
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        publisher = await Publisher.open(connection)
        for start in range(0, n, SUBMIT_CHUNK):
            batch = [
                NewTask(user_id="bench", task_type="diag.noop", parameters={})
                for _ in range(min(SUBMIT_CHUNK, n - start))
            ]
            await submit_tasks(store, publisher, batch)
    finally:
        await connection.close()


async def _count(store: Store, query: Doc, n: int, within_s: float, what: str) -> None:
    async def reached() -> bool:
        return await store.tasks.count_documents(query) >= n

    # Polled once a second: a count scans every task, and the store is what is measured.
    await wait_for_async(reached, timeout=within_s, interval=1.0, message=what)


async def _event_span(store: Store) -> float:
    """Seconds from the first task.started to the last task.completed in the log."""
    first = await store.events.find_one({"type": "task.started"}, sort=[("occurred_at", 1)])
    last = await store.events.find_one({"type": "task.completed"}, sort=[("occurred_at", -1)])
    assert first is not None
    assert last is not None
    return float((last["occurred_at"] - first["occurred_at"]).total_seconds())


async def _completions_per_task(store: Store) -> set[int]:
    rows = await store.events.aggregate(
        [{"$match": {"type": "task.completed"}}, {"$group": {"_id": "$task_id", "n": {"$sum": 1}}}]
    )
    return {int(row["n"]) async for row in rows}


async def executor_run(
    rabbitmq_url: str,
    store_server: StoreServer,
    n: int,
    executors: int,
    within_s: float,
    profile_dir: Path | None = None,
) -> Figures:
    mongo_url = store_server.url
    async with _database(mongo_url) as store:
        env = stack_env(rabbitmq_url, mongo_url, store.db.name)
        with _log_dir() as logs, _processes() as processes:
            processes.append(ServiceProcess("aggregator", env, logs).start())
            await _fill_backlog(store, rabbitmq_url, n)
            await _count(store, {"version": {"$gte": 1}}, n, within_s, "submissions folded")
            for _ in range(executors):
                processes.append(ServiceProcess("executor", env, logs).start(wait_ready=False))
            began = time.perf_counter()
            with _profiled(processes, store_server, profile_dir, executors):
                await _count(store, {"status": "COMPLETED"}, n, within_s, "every task COMPLETED")
            projected_s = time.perf_counter() - began
        span_s = await _event_span(store)
        once = await _completions_per_task(store) == {1}
    return {
        "baseline": f"executor x{executors} diag.noop",
        "n": n,
        "executors": executors,
        "seconds": round(span_s, 3),
        "tasks_per_s": per_second(n, span_s),
        "until_projected_per_s": per_second(n, projected_s),
        "each_completed_once": once,
    }


@contextlib.contextmanager
def _profiled(
    processes: list[ServiceProcess], store: StoreServer, out: Path | None, executors: int
) -> Iterator[None]:
    if out is None:
        yield
        return
    pids = {
        f"{p.service}#{i}": p.process.pid for i, p in enumerate(processes) if p.process is not None
    }
    if store.pid is not None:
        pids["store"] = store.pid
    profiler = Profiler(pids, out / f"executors-{executors}")
    with profiler.recording():
        yield
    for name in pids:
        print(f"-- {name}: hottest functions (% of samples, self / with callees)")
        for function, own, total in profiler.top(name, limit=8):
            print(f"   {own:5.1f} {total:5.1f}  {function}")


def _table(rows: list[Figures], raw_rate: float) -> str:
    lines = [f"{'figure':<28} {'n':>7} {'rate/s':>10} {'vs raw':>7}  note", "-" * 70]
    for row in rows:
        rate = float(row.get("tasks_per_s") or row.get("msgs_per_s") or 0.0)
        note = row.get("note", "")
        if "until_projected_per_s" in row:
            note = f"until projected {row['until_projected_per_s']:,.1f}/s"
            if not row["each_completed_once"]:
                note += "; SOME TASK COMPLETED TWICE"
        ratio = f"{rate / raw_rate:.3f}" if raw_rate else "-"
        lines.append(f"{row['baseline']:<28} {row['n']:>7,} {rate:>10,.1f} {ratio:>7}  {note}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Figures]:
    cancel_on_signals()
    with store_server() as store, fresh_vhost("bench-exec") as rabbitmq_url:
        broker = await broker_version(rabbitmq_url)
        print(f"broker: {broker}; store: {store.kind}; cpus: {os.cpu_count()}")
        raw = await consume_rate(rabbitmq_url, args.n)
        rows: list[Figures] = [raw]
        for count in args.executor_counts:
            figures = await executor_run(
                rabbitmq_url, store, args.n, count, args.timeout, args.py_spy
            )
            rows.append(figures)
            print(f"  done: {count} executor(s)", flush=True)
    print(_table(rows, float(raw["msgs_per_s"])))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rows = asyncio.run(main_async(args))
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        args.json.write_text(json.dumps({"meta": meta, "figures": rows}, indent=2))
    return 0 if all(r.get("each_completed_once", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
