"""One fault run: the four services as processes (two executors), a durable CloudEvents
subscriber bound before anything is submitted, the workload, and the final verdict."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from taskcore.adapters.mongo import Store
from taskcore.messages.topology import (
    AGGREGATOR_QUEUE,
    BRIDGE_QUEUE,
    DEAD_LETTER_QUEUE,
    task_queue_name,
)
from taskcore.testing import wait_for_async
from taskcore.testing.broker_control import consumer_counts
from taskcore.testing.durable_subscriber import DurableEventSubscriber
from taskcore.testing.processes import SERVICES, ServiceProcess, Stack

from tests.e2e.conftest import API_KEYS
from tests.faults.invariants import Expected, check, observe, settle
from tests.faults.workload import Schedule, Submitted, Workload, expected_statuses, submit

# The durable queues some service must consume, whatever happened to its connection.
CONSUMED_QUEUES = (
    task_queue_name("paid"),
    task_queue_name("free"),
    AGGREGATOR_QUEUE,
    BRIDGE_QUEUE,
    DEAD_LETTER_QUEUE,
)

SOAK = os.environ.get("TASKCORE_SOAK") == "1"
# The soak runs a bigger workload through more faults for longer.
SCALE = 5 if SOAK else 1
SETTLE_TIMEOUT_S = 240.0 if SOAK else 90.0


def service_env(rabbitmq_url: str, mongo_url: str, db: str) -> dict[str, str]:
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "MONGO_URL": mongo_url,
        "MONGO_DB": db,
        "TASKCORE_API_KEYS": json.dumps(API_KEYS),
        # Short leases and a quick outbox relay, so recoveries take seconds.
        "TASKCORE_LEASE_SECONDS": "3",
        "TASKCORE_RELAY_AFTER_SECONDS": "1",
        "TASKCORE_RELAY_INTERVAL_SECONDS": "0.3",
        "TASKCORE_SHUTDOWN_GRACE_SECONDS": "5",
        # Few slots per executor: the workload stays in flight long enough to be hit.
        "TASKCORE_CONCURRENCY": "4",
        "TASKCORE_PREFETCH": "8",
    }


@dataclass
class FaultRun:
    stack: Stack
    store: Store
    subscriber: DurableEventSubscriber
    vhost: str
    mongo_url: str
    workload: Workload
    submitted: Submitted = field(default_factory=lambda: Submitted({}))
    # Poison messages injected on purpose: each must end as exactly one dead letter.
    poison_ids: set[str] = field(default_factory=set)
    # Fires all through the run (started with the first submission).
    schedule: Schedule = field(default_factory=Schedule)

    @property
    def executors(self) -> list[ServiceProcess]:
        return self.stack.processes["executor"]

    def service(self, name: str) -> ServiceProcess:
        return self.stack.processes[name][0]

    async def readiness(self) -> dict[str, int]:
        """Each service's ``/readyz`` status (0: no answer)."""
        codes: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=3) as client:
            for p in self.stack.all():
                try:
                    response = await client.get(f"{p.url}/readyz")
                except httpx.HTTPError:
                    codes[f"{p.service}:{p.port}"] = 0
                else:
                    codes[f"{p.service}:{p.port}"] = response.status_code
        return codes

    async def wait_readiness(
        self, want_ready: bool, within: float = 60, services: tuple[str, ...] = SERVICES
    ) -> None:
        """Until every one of ``services`` answers ``/readyz`` ready (or: not ready)."""
        last: dict[str, int] = {}

        async def reached() -> bool:
            nonlocal last
            last = await self.readiness()
            mine = [code for name, code in last.items() if name.split(":")[0] in services]
            return all((code == 200) == want_ready for code in mine)

        try:
            await wait_for_async(reached, timeout=within, interval=0.5, message="readiness")
        except AssertionError as exc:
            raise AssertionError(f"readiness is not all {want_ready}: {last}") from exc

    async def wait_recovered(self, within: float = 60) -> None:
        """Every service ready again and every durable queue consumed again, on their own."""
        await self.wait_readiness(True, within)
        last: dict[str, int] = {}

        async def consumed() -> bool:
            nonlocal last
            last = await asyncio.to_thread(consumer_counts, self.vhost)
            return all(last.get(q, 0) > 0 for q in CONSUMED_QUEUES)

        try:
            await wait_for_async(consumed, timeout=within, interval=0.5, message="consumers")
        except AssertionError as exc:
            raise AssertionError(f"queues without consumers after recovery: {last}") from exc

    async def submit(self, workload: Workload | None = None) -> Submitted:
        if self.schedule.id is None:
            await self.schedule.start(self.stack.api.url)
        more = await submit(self.stack.api.url, workload or self.workload)
        self.submitted = self.submitted.merge(more)
        return more

    async def expected(self) -> Expected:
        fanouts = self.submitted.of_kind("fanout")
        doomed = {f"{task_id}:1" for task_id in self.submitted.of_kind("doomed")}
        return Expected(
            statuses=await expected_statuses(self.store, self.submitted, self.schedule),
            children={
                **{parent: self.workload.children for parent in fanouts},
                **{workflow: 3 for workflow in self.submitted.of_kind("workflow")},
            },
            dead_letter_ids=frozenset(doomed | self.poison_ids),
        )

    async def verify(self, within: float = SETTLE_TIMEOUT_S) -> None:
        """Stop the schedule, wait for the run to settle, then assert every post-condition."""
        await self.schedule.stop(self.stack.api.url)
        left = await settle(
            self.store, self.vhost, self.subscriber.events, self.workload.total, within=within
        )
        problems = [f"the run did not settle within {within:.0f} s: {left}"] if left else []
        problems += await check(
            self.store,
            await self.expected(),
            self.subscriber.events,
            self.subscriber.errors,
            mongo_url=self.mongo_url,
            schedule_id=self.schedule.id,
        )
        print(await self.summary())
        assert not problems, "\n".join(problems)

    async def summary(self) -> str:
        """A line on what the run went through, for the log of a passing run too."""
        observed = await observe(self.store)
        started = Counter(
            e["task_id"]
            for evs in observed.events.values()
            for e in evs
            if e["type"] == "task.started"
        )
        return (
            f"{len(observed.tasks)} tasks, {sum(map(len, observed.events.values()))} events, "
            f"{sum(n > 1 for n in started.values())} tasks started more than once, "
            f"{len(observed.dead_letters)} dead letters; the subscriber got "
            f"{len(self.subscriber.events)} CloudEvents, "
            f"{len(self.subscriber.unique_by_id())} distinct"
        )


@asynccontextmanager
async def fault_run(
    *,
    rabbitmq_url: str,
    vhost: str,
    mongo_url: str,
    store: Store,
    log_dir: Path,
    workload: Workload,
) -> AsyncIterator[FaultRun]:
    env = service_env(rabbitmq_url, mongo_url, store.db.name)
    async with DurableEventSubscriber(rabbitmq_url) as subscriber:
        stack = Stack(env=env, log_dir=log_dir)
        try:
            stack.start(executors=2)
            yield FaultRun(stack, store, subscriber, vhost, mongo_url, workload)
        finally:
            stack.stop()
            print(stack.logs())
