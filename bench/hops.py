"""Where one task's time goes: a per-hop latency breakdown, from submit to subscriber.

    python -m bench.hops [--n 300] [--rate 50]

Submits ``diag.noop`` tasks one ``POST /v1/tasks`` at a time on a fixed schedule and
times each hop from what the task leaves behind, without instrumenting the services:
the event times the services record (``created_at``, ``task.started``,
``task.completed``) and the moments copies of the task's messages reach queues this
script binds beside the services' own (the dispatch on ``tasks.exchange``, the executor's
event message and the aggregator's hand-off on ``tasks.internal.events``, the CloudEvent
on ``tasks.events.exchange``). Every time is this machine's wall clock.

Hops: ``http`` (the POST's round trip), ``dispatch`` (stored -> the dispatch routed),
``claim`` (routed -> the executor's claim, its ``task.started``), ``run``, ``outcome``
(the outcome recorded and its events published), ``fold`` (the aggregator's append,
fold and hand-off), ``bridge`` (the hand-off -> the CloudEvent at a subscriber), and
``total`` (the POST sent -> the completed CloudEvent received).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from taskcore.messages.topology import (
    COMMITTED_ROUTING_KEY,
    EXTERNAL_EVENTS_EXCHANGE,
    INTERNAL_EVENTS_EXCHANGE,
    TASKS_EXCHANGE,
    declare_topology,
)
from taskcore.testing.wait import wait_for_async

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines.stats import latency_percentiles_ms
from bench.common import StackTarget, fresh_vhost, running_stack, store_server

HOPS = ("http", "dispatch", "claim", "run", "outcome", "fold", "bridge", "total")
COMPLETED = "task.completed"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Trail:
    """What one task left behind, as wall-clock times."""

    sent: float = 0.0
    answered: float = 0.0
    stored: float | None = None  # created_at
    dispatched: float | None = None
    started: float | None = None
    completed: float | None = None
    events: float | None = None
    committed: float | None = None
    cloudevent: float | None = None

    def hops(self) -> dict[str, float] | None:
        """Each hop's seconds, once the task has passed every point; else None."""
        points = (
            self.stored,
            self.dispatched,
            self.started,
            self.completed,
            self.events,
            self.committed,
            self.cloudevent,
        )
        known = [p for p in points if p is not None]
        if len(known) < len(points):
            return None
        # Points seen by this script's queues lag the services' own clocks a little (the
        # executor may claim a dispatch before this script's copy of it arrives): each
        # point is taken no earlier than the one before, so no hop comes out negative.
        chained = list(itertools.accumulate(known, max))
        stored, dispatched, started, completed, events, committed, cloudevent = chained
        return {
            "http": self.answered - self.sent,
            "dispatch": dispatched - stored,
            "claim": started - dispatched,
            "run": completed - started,
            "outcome": events - completed,
            "fold": committed - events,
            "bridge": cloudevent - committed,
            "total": cloudevent - self.sent,
        }


@dataclass
class HopWatcher:
    """Queues beside the services' own, recording when each task's messages pass."""

    url: str
    trails: dict[str, Trail] = field(default_factory=lambda: defaultdict(Trail))
    _connection: AbstractRobustConnection | None = None

    async def __aenter__(self) -> HopWatcher:
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "bench-hops"}
        )
        channel = await self._connection.channel()
        await declare_topology(channel)
        bindings: list[tuple[str, str, Callable[[AbstractIncomingMessage, float], None]]] = [
            (TASKS_EXCHANGE, "paid", self._on_dispatch),
            (INTERNAL_EVENTS_EXCHANGE, "task.#", self._on_events),
            (INTERNAL_EVENTS_EXCHANGE, COMMITTED_ROUTING_KEY, self._on_committed),
            (EXTERNAL_EVENTS_EXCHANGE, "", self._on_cloudevent),
        ]
        for exchange, key, handler in bindings:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(await channel.get_exchange(exchange), routing_key=key)
            await queue.consume(_timed(handler), no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    def _on_dispatch(self, message: AbstractIncomingMessage, at: float) -> None:
        if message.correlation_id and self.trails[message.correlation_id].dispatched is None:
            self.trails[message.correlation_id].dispatched = at

    def _on_events(self, message: AbstractIncomingMessage, at: float) -> None:
        for event in json.loads(message.body).get("events", ()):
            trail = self.trails[event["task_id"]]
            if event["type"] == "task.started":
                trail.started = _epoch(event["occurred_at"])
            elif event["type"] == COMPLETED:
                trail.completed = _epoch(event["occurred_at"])
                trail.events = trail.events or at

    def _on_committed(self, message: AbstractIncomingMessage, at: float) -> None:
        for item in json.loads(message.body).get("items", ()):
            event = item["event"]
            if event["type"] == COMPLETED:
                trail = self.trails[event["task_id"]]
                trail.committed = trail.committed or at

    def _on_cloudevent(self, message: AbstractIncomingMessage, at: float) -> None:
        event = json.loads(message.body)
        if event.get("type") == "io.taskcore.task.completed":
            trail = self.trails[str(event["subject"])]
            trail.cloudevent = trail.cloudevent or at


def _timed(
    handler: Callable[[AbstractIncomingMessage, float], None],
) -> Callable[[AbstractIncomingMessage], Any]:
    async def on_message(message: AbstractIncomingMessage) -> None:
        handler(message, time.time())

    return on_message


async def measure_hops(target: StackTarget, *, n: int, rate: float) -> dict[str, Any]:
    """Submit ``n`` noop tasks at ``rate`` per second; each hop's percentiles in ms."""
    headers = {"Authorization": f"Bearer {target.api_key}"}
    async with (
        HopWatcher(target.rabbitmq_url) as watcher,
        httpx.AsyncClient(base_url=target.api_url, headers=headers, timeout=30) as http,
    ):
        ids: list[str] = []
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule itself, not synchronisation
            sent = time.time()
            response = await http.post("/v1/tasks", json={"task_type": "diag.noop"})
            answered = time.time()
            response.raise_for_status()
            task = response.json()
            trail = watcher.trails[task["id"]]
            trail.sent, trail.answered = sent, answered
            trail.stored = _epoch(task["created_at"])
            ids.append(task["id"])

        async def all_seen() -> bool:
            return all(watcher.trails[t].hops() is not None for t in ids)

        await wait_for_async(all_seen, timeout=60 + n / rate, interval=0.1, message="hops")
        hops = [watcher.trails[t].hops() for t in ids]
    samples = {hop: [h[hop] for h in hops if h is not None] for hop in HOPS}
    return {hop: latency_percentiles_ms(values) for hop, values in samples.items()}


def format_hops(report: dict[str, Any]) -> str:
    lines = [f"  {'hop':<10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}"]
    for hop in HOPS:
        r = report[hop]
        lines.append(f"  {hop:<10}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['p99_ms']:>10.2f}")
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    with (
        store_server() as store,
        fresh_vhost("hops") as url,
        running_stack(url, store.url) as target,
    ):
        report = await measure_hops(target, n=args.n, rate=args.rate)
    print(f"per-hop latency, {args.n} diag.noop at {args.rate:g}/s, one POST each:")
    print(format_hops(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--json", type=Path)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
