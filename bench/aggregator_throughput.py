"""How fast one aggregator process folds a backlog of events, beside the raw broker.

    python bench/aggregator_throughput.py [--sizes 10000,100000] [--per-message 20] [--json out]

In one run, on one RabbitMQ vhost and one store (an nx-27017 stand-in unless ``MONGO_URL``
is set), for each size: a fresh database gets the task documents the API would insert,
the aggregator's queue is pre-filled with every task's events (submitted, started, three
progress, completed: six per task) packed ``--per-message`` to an AMQP message as the
producers' emitters pack them, and then one aggregator process starts and drains it.
Beside it, the raw broker's consume rate (``bench/baselines/raw_broker.consume_rate``) over
as many messages of the same body size, pre-filled the same way.

"events folded/s" counts from the first folded event to the last, read from the
aggregator's own ``taskcore_events_folded_total``; afterwards every task is checked
COMPLETED in its projection and the log is checked to hold every event exactly once.
"peak RSS" is the aggregator process's high-water mark (``VmHWM``): flat from 10k to 100k
events means memory is bounded by the batch and prefetch sizes, not by the backlog.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from prometheus_client.parser import text_string_to_metric_families

# Run as a file (`python bench/aggregator_throughput.py`) or as a module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymongo import AsyncMongoClient
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.messages.envelope import EventBatch
from taskcore.messages.topology import INTERNAL_EVENTS_EXCHANGE, declare_topology
from taskcore.submission import NewTask, new_task_document
from taskcore.testing.processes import ServiceProcess

from bench.baselines import broker_version, consume_rate
from bench.baselines.stats import per_second
from bench.common import (
    Profiler,
    StoreServer,
    cancel_on_signals,
    cpu_snapshot,
    fresh_vhost,
    rss_bytes,
    stack_env,
    store_server,
)

EVENTS_PER_TASK = 6
PUBLISH_WINDOW = 200
Figures = dict[str, Any]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="events per run, comma-separated")
    parser.add_argument("--per-message", type=int, default=20, help="events per AMQP message")
    parser.add_argument("--order", choices=("round", "task"), default="round", help="see _messages")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--py-spy", type=Path, help="profile the aggregator and the store while they fold"
    )
    args = parser.parse_args(argv)
    args.size_list = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not args.size_list or min(args.size_list) < EVENTS_PER_TASK or args.per_message < 1:
        parser.error("sizes must be at least 6 events, --per-message at least 1")
    return args


# ---- the backlog ---------------------------------------------------------------------


def _histories(tasks: int) -> tuple[list[dict[str, Any]], list[list[TaskEvent]]]:
    """The documents the API inserts and each task's six events, in causal order."""
    t0 = datetime.now(UTC)
    docs, lives = [], []
    for i in range(tasks):
        new = NewTask(user_id="bench", task_type="diag.sleep", parameters={"seconds": 1})
        doc, entry = new_task_document(new, t0)
        doc["seq"] = 1001
        docs.append(doc)
        life = [entry.event]
        for seq, (type_, data) in enumerate(
            [
                (EventType.STARTED, {"node_id": "bench", "attempt": 1}),
                *((EventType.PROGRESS, {"progress": {"done": k}}) for k in range(3)),
                (EventType.COMPLETED, {"result": {"slept_seconds": 1.0, "task": i}}),
            ],
            start=2,
        ):
            life.append(
                TaskEvent(
                    event_id=event_id_for(new.task_id, seq),
                    task_id=new.task_id,
                    sequence=seq,
                    type=type_,
                    occurred_at=t0 + timedelta(milliseconds=seq),
                    data=data,
                )
            )
        lives.append(life)
    return docs, lives


def _messages(lives: list[list[TaskEvent]], per_message: int, order: str) -> list[bytes]:
    """Packed ``per_message`` to a message, either round by round (every task's first
    event, then every task's second...: many tasks progressing at once, so a batch holds one
    event per task and nothing coalesces), or task by task (a batch holds whole histories,
    so each task's six events fold into one projection write)."""
    if order == "round":
        stream = [life[k] for k in range(EVENTS_PER_TASK) for life in lives]
    else:
        stream = [e for life in lives for e in life]
    return [
        EventBatch(events=stream[i : i + per_message]).model_dump_json().encode()
        for i in range(0, len(stream), per_message)
    ]


async def _prefill(rabbitmq_url: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        await declare_topology(await connection.channel())
        publisher = await Publisher.open(connection)
        for start in range(0, len(bodies), PUBLISH_WINDOW):
            await asyncio.gather(
                *(
                    publisher.publish(INTERNAL_EVENTS_EXCHANGE, "task.batch", amqp_message(body))
                    for body in bodies[start : start + PUBLISH_WINDOW]
                )
            )
    finally:
        await connection.close()


# ---- one run -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _database(mongo_url: str) -> AsyncIterator[Store]:
    store = Store(AsyncMongoClient(mongo_url, tz_aware=True), f"bench_{uuid.uuid4().hex[:10]}")
    try:
        await store.ensure_indexes()
        yield store
    finally:
        await store.client.drop_database(store.db.name)
        await store.close()


@contextlib.contextmanager
def _log_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-aggregator-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _folded(http: httpx.AsyncClient) -> float:
    try:
        text = (await http.get("/metrics", timeout=10)).text
    except httpx.ConnectError:
        return 0.0  # not listening yet
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "taskcore_events_folded_total"
    )


async def _watch_folding(url: str, n: int, within_s: float) -> tuple[float, float, float]:
    """(first seen, last, events folded by the first sighting) on the monotonic clock."""
    async with httpx.AsyncClient(base_url=url) as http:
        first_at, first_count = 0.0, 0.0
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            count = await _folded(http)
            now = time.monotonic()
            if count and not first_at:
                first_at, first_count = now, count
            if count >= n:
                return first_at, now, first_count
            await asyncio.sleep(0.02 if not first_at else 0.1)  # the scrape period
    raise TimeoutError(f"the aggregator did not fold {n} events within {within_s}s")


@contextlib.contextmanager
def _profiled(pids: dict[str, int], out: Path | None) -> Iterator[None]:
    if out is None:
        yield
        return
    profiler = Profiler(pids, out)
    with profiler.recording():
        yield
    for name in pids:
        print(f"-- {name}: hottest functions (% of samples, self / with callees)")
        for function, own, total in profiler.top(name, limit=10):
            print(f"   {own:5.1f} {total:5.1f}  {function}")


async def aggregator_run(
    store_server: StoreServer,
    rabbitmq_url: str,
    n: int,
    per_message: int,
    order: str,
    within_s: float,
    profile_dir: Path | None = None,
) -> tuple[Figures, int]:
    mongo_url = store_server.url
    tasks = n // EVENTS_PER_TASK
    events = tasks * EVENTS_PER_TASK
    docs, lives = _histories(tasks)
    bodies = _messages(lives, per_message, order)
    del lives
    async with _database(mongo_url) as store:
        for start in range(0, len(docs), 1000):
            await store.tasks.insert_many(docs[start : start + 1000])
        del docs
        await _prefill(rabbitmq_url, bodies)
        body_bytes = sum(len(b) for b in bodies) // len(bodies)
        env = stack_env(rabbitmq_url, mongo_url, store.db.name)
        with _log_dir() as logs:
            aggregator = ServiceProcess("aggregator", env, logs).start(wait_ready=False)
            try:
                assert aggregator.process is not None
                pids = {"aggregator": aggregator.process.pid}
                if store_server.pid is not None:
                    pids["store"] = store_server.pid
                out = profile_dir / f"events-{n}" if profile_dir else None
                cpu_before = cpu_snapshot(pids)
                with _profiled(pids, out):
                    first_at, last_at, first_count = await _watch_folding(
                        aggregator.url, events, within_s
                    )
                cpu_after = cpu_snapshot(pids)
                peak = rss_bytes(aggregator.process.pid, "VmHWM")
            finally:
                aggregator.stop()
        completed = await store.tasks.count_documents({"status": "COMPLETED", "version": 6})
        logged = await store.events.count_documents({})
    figures = {
        "baseline": f"aggregator, {per_message}/msg, by {order}",
        "n": events,
        "messages": len(bodies),
        "body_bytes": body_bytes,
        "seconds": round(last_at - first_at, 3),
        "folded_before_first_sighting": int(first_count),
        "events_per_s": per_second(int(events - first_count), last_at - first_at),
        "msgs_per_s": per_second(int((events - first_count) / per_message), last_at - first_at),
        "peak_rss_mib": round(peak / 2**20, 1),
        # CPU seconds per 1000 events, from start to end (startup included for the aggregator).
        "cpu_s_per_1k_events": {
            name: round(1000 * (cpu_after[name] - cpu_before.get(name, 0.0)) / events, 3)
            for name in cpu_after
        },
        "every_task_completed": completed == tasks,
        "logged_once": logged == events,
    }
    return figures, body_bytes


def _table(rows: list[Figures]) -> str:
    head = f"{'figure':<34} {'events':>8} {'msgs':>7} {'msgs/s':>9} {'events/s':>9} {'peak RSS':>9}"
    lines = [head, "-" * len(head)]
    for row in rows:
        events = f"{row['events_per_s']:,.0f}" if "events_per_s" in row else "-"
        rss = f"{row['peak_rss_mib']} MiB" if "peak_rss_mib" in row else "-"
        lines.append(
            f"{row['baseline']:<34} {row['n'] if 'events_per_s' in row else '-':>8} "
            f"{row.get('messages', row['n']):>7,} {row['msgs_per_s']:>9,.0f} {events:>9} {rss:>9}"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Figures]:
    cancel_on_signals()
    rows: list[Figures] = []
    with store_server() as store, fresh_vhost("bench-agg") as rabbitmq_url:
        print(
            f"broker: {await broker_version(rabbitmq_url)}; store: {store.kind}; "
            f"cpus: {os.cpu_count()}",
            flush=True,
        )
        for size in args.size_list:
            figures, body_bytes = await aggregator_run(
                store, rabbitmq_url, size, args.per_message, args.order, args.timeout, args.py_spy
            )
            raw = await consume_rate(rabbitmq_url, figures["messages"], body_size=body_bytes)
            raw["baseline"] = f"raw broker consume, {body_bytes} B"
            rows += [raw, figures]
            print(f"  done: {size:,} events", flush=True)
    print(_table(rows))
    sizes = [r for r in rows if "peak_rss_mib" in r]
    if len(sizes) > 1:
        growth = sizes[-1]["peak_rss_mib"] / sizes[0]["peak_rss_mib"]
        print(
            f"peak RSS from {sizes[0]['n']:,} to {sizes[-1]['n']:,} events: x{growth:.2f} "
            f"for x{sizes[-1]['n'] / sizes[0]['n']:.0f} the events"
        )
    for row in sizes:
        print(f"CPU s per 1000 events, {row['n']:,} events: {row['cpu_s_per_1k_events']}")
        if not (row["every_task_completed"] and row["logged_once"]):
            print(f"CHECK FAILED for {row['n']:,} events: {row}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    rows = asyncio.run(main_async(args))
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine()}
        args.json.write_text(json.dumps({"meta": meta, "figures": rows}, indent=2))
    ok = all(r.get("every_task_completed", True) and r.get("logged_once", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
