"""How fast the API accepts tasks, next to the raw broker's confirmed publish rate.

    python -m bench.api_submit [--n 5000] [--batch-n 20000] [--concurrency 64]
                               [--batch-size 1000] [--batch-in-flight 2] [--full-stack]
                               [--json out.json]

Starts the API as its own process on a fresh RabbitMQ vhost and database (an nx-27017
stand-in unless ``MONGO_URL`` is set) and submits ``diag.noop`` tasks over HTTP:

- single: ``POST /v1/tasks``, ``--concurrency`` requests in flight;
- batch: ``POST /v1/tasks/batch`` of ``--batch-size`` tasks, ``--batch-in-flight`` at a time.

Each accepted task is one store insert and two confirmed, persistent publishes (the
dispatch and the ``task.submitted`` event) behind an HTTP request. In the same run, on
the same vhost, the raw aio-pika baseline publishes persistent messages with confirms
(``bench/baselines/raw_broker.confirmed_publish_rate``), and the table shows the ratio.

By default only the API runs (nothing consumes, and the outbox relay is turned off, since
without an aggregator every entry would look stale): the figures are the API's own cost.
``--full-stack`` runs the executor, aggregator and event bridge too, sharing the machine
as they would in a deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pymongo import MongoClient

# Run as a file (`python bench/api_submit.py`) or a module (`python -m bench.api_submit`).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskcore.testing.processes import ServiceProcess

from bench.baselines import confirmed_publish_rate
from bench.baselines.stats import latency_percentiles_ms, per_second
from bench.common import (
    BENCH_API_KEY,
    Profiler,
    cancel_on_signals,
    cpu_seconds,
    fresh_vhost,
    load_average,
    print_profiles,
    stack_env,
    store_server,
)

Figures = dict[str, Any]
TASK = {"task_type": "diag.noop"}


@contextlib.contextmanager
def services(rabbitmq_url: str, mongo_url: str, full_stack: bool) -> Iterator[ServiceProcess]:
    """The API (and with ``full_stack`` the other three services); yields the API."""
    database = f"bench_{uuid.uuid4().hex[:10]}"
    extra = {} if full_stack else {"TASKCORE_RELAY_AFTER_SECONDS": "86400"}
    env = stack_env(rabbitmq_url, mongo_url, database, extra)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    names = ("aggregator", "event-bridge", "executor", "api") if full_stack else ("api",)
    processes = [ServiceProcess(name, env, log_dir) for name in names]
    try:
        for p in processes:
            p.start(wait_ready=False)
        for p in processes:
            p.wait_ready()
        yield processes[-1]
    except BaseException:
        for p in processes:
            print(p.log_tail(), file=sys.stderr)
        raise
    finally:
        for p in processes:
            p.stop()
        with MongoClient[dict[str, object]](mongo_url, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(database)


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer.

    The load generator shares the machine with what it measures, and httpx spends about
    5 ms of CPU per request here; this spends a small fraction of that, so the figures say
    more about the API than about the client.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: Bearer {BENCH_API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def single(url: str, n: int, concurrency: int) -> Figures:
    """``n`` single submissions over ``concurrency`` connections, each one request at a time."""
    latencies: list[float] = []
    body = json.dumps(TASK).encode()
    counts = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    async def worker(count: int) -> None:
        connection = await Connection.open(url)
        try:
            for _ in range(count):
                sent = time.perf_counter()
                status, answer = await connection.post("/v1/tasks", body)
                latencies.append(time.perf_counter() - sent)
                if status != 202:
                    raise RuntimeError(f"submission refused: {status} {answer[:300]!r}")
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(count) for count in counts if count))
    seconds = time.perf_counter() - started
    return {
        "mode": f"single, {concurrency} in flight",
        "n": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": per_second(n, seconds),
        **{f"latency_{k}": v for k, v in latency_percentiles_ms(latencies).items()},
    }


async def batched(url: str, n: int, size: int, in_flight: int = 2) -> Figures:
    """``n`` tasks in batches of ``size``, ``in_flight`` batches at a time."""
    latencies: list[float] = []
    pending = [min(size, n - start) for start in range(0, n, size)]

    async def worker() -> None:
        connection = await Connection.open(url)
        try:
            while pending:
                count = pending.pop()
                body = json.dumps({"tasks": [TASK] * count}).encode()
                sent = time.perf_counter()
                status, answer = await connection.post("/v1/tasks/batch", body)
                latencies.append(time.perf_counter() - sent)
                accepted = sum(r["ok"] for r in json.loads(answer)["results"])
                if status != 200 or accepted != count:
                    raise RuntimeError(f"batch refused: {status} {answer[:300]!r}")
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    seconds = time.perf_counter() - started
    return {
        "mode": f"batch of {size}, {in_flight} in flight",
        "n": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": per_second(n, seconds),
        **{f"batch_latency_{k}": v for k, v in latency_percentiles_ms(latencies).items()},
    }


async def measure(args: argparse.Namespace) -> Figures:
    cancel_on_signals()
    with store_server() as store, fresh_vhost("bench-api") as rabbitmq_url:
        with services(rabbitmq_url, store.url, args.full_stack) as api:
            assert api.process is not None
            await single(api.url, min(200, args.n), args.concurrency)  # warm up
            cpu_before = cpu_seconds(api.process.pid)
            profiling = (
                Profiler({"api": api.process.pid}, args.py_spy).recording()
                if args.py_spy
                else contextlib.nullcontext()
            )
            with profiling:
                one = await single(api.url, args.n, args.concurrency)
            cpu_single = cpu_seconds(api.process.pid) - cpu_before
            many = await batched(api.url, args.batch_n, args.batch_size, args.batch_in_flight)
            cpu_batch = cpu_seconds(api.process.pid) - cpu_before - cpu_single
            one["api_cpu_ms_per_task"] = round(1000 * cpu_single / args.n, 3)
            many["api_cpu_ms_per_task"] = round(1000 * cpu_batch / args.batch_n, 3)
        # The baseline on the same broker and vhost, with the services stopped.
        raw = await confirmed_publish_rate(rabbitmq_url, args.raw_n)
    for figures in (one, many):
        figures["ratio_to_raw_publish"] = round(figures["tasks_per_s"] / raw["msgs_per_s"], 3)
    return {
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "load": load_average()},
        "store": store.kind,
        "full_stack": args.full_stack,
        "single": one,
        "batch": many,
        "raw_confirmed_publish": raw,
    }


def _cpus() -> int:
    return os.cpu_count() or 0


def table(result: Figures) -> str:
    raw = result["raw_confirmed_publish"]
    rows = [
        ("taskcore " + result["single"]["mode"], result["single"]),
        ("taskcore " + result["batch"]["mode"], result["batch"]),
    ]
    lines = [f"{'':44} {'tasks/s':>10} {'raw msgs/s':>11} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8}"]
    for name, f in rows:
        p50 = f.get("latency_p50_ms", f.get("batch_latency_p50_ms", 0.0))
        p99 = f.get("latency_p99_ms", f.get("batch_latency_p99_ms", 0.0))
        lines.append(
            f"{name:44} {f['tasks_per_s']:>10.0f} {raw['msgs_per_s']:>11.0f} "
            f"{f['ratio_to_raw_publish']:>7.3f} {p50:>8.1f} {p99:>8.1f}"
        )
    lines.append(
        f"raw aio-pika confirmed publish: {raw['n']} persistent msgs, window {raw['window']}, "
        f"{raw['msgs_per_s']:.0f} msgs/s. Each taskcore task is 1 store insert + 2 confirmed "
        "publishes behind HTTP."
    )
    lines.append(
        f"API CPU per task: single {result['single']['api_cpu_ms_per_task']} ms, "
        f"batch {result['batch']['api_cpu_ms_per_task']} ms; store: {result['store']}; "
        f"full stack: {result['full_stack']}; load average {result['machine']['load']}"
    )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5_000, help="single submissions")
    parser.add_argument("--batch-n", type=int, default=20_000, help="tasks submitted in batches")
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--batch-in-flight", type=int, default=2, help="batches in flight")
    parser.add_argument("--concurrency", type=int, default=64, help="single requests in flight")
    parser.add_argument("--raw-n", type=int, default=20_000, help="raw baseline messages")
    parser.add_argument("--full-stack", action="store_true", help="run all four services")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--py-spy", type=Path, help="profile the API during the single run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    result = asyncio.run(measure(args))
    print(table(result))
    if args.py_spy:
        print_profiles(args.py_spy)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
