"""The faults themselves, each one step a test (or the soak) can take mid-run."""

from __future__ import annotations

import asyncio

import httpx
from taskcore.adapters.mongo import now_ms
from taskcore.testing import wait_for_async
from taskcore.testing.broker_control import broker_stopped
from taskcore.testing.durable_standin import DurableStandin
from taskcore.testing.processes import ServiceProcess

from tests.faults.harness import FaultRun
from tests.faults.injectors import duplicate_everything, inject_poisons, poisons
from tests.faults.workload import AUTH, Workload

# The services that use the store (the event bridge does not).
STORE_USERS = ("api", "executor", "aggregator")


async def busiest_executor(run: FaultRun) -> tuple[ServiceProcess, int]:
    """The executor holding the most running tasks, and how many it holds."""
    running = [
        d.get("execution_node_id")
        async for d in run.store.tasks.find({"status": "RUNNING"}, {"execution_node_id": 1})
    ]

    def held(p: ServiceProcess) -> int:
        pid = p.process.pid if p.process else -1
        return sum(str(node).endswith(f"-{pid}") for node in running)

    victim = max(run.executors, key=held)
    return victim, held(victim)


async def kill_busiest_executor(run: FaultRun) -> int:
    """kill -9 the executor holding the most running tasks and start a fresh one in its
    place; returns how many running tasks the kill interrupted."""
    victim, holding = await busiest_executor(run)
    victim.kill()
    await asyncio.to_thread(victim.start)
    return holding


async def kill_and_restart(run: FaultRun, *services: str) -> None:
    """kill -9 these services together (mid-batch, with unacked deliveries), then start
    them again."""
    victims = [run.service(name) for name in services]
    for victim in victims:
        victim.kill()
    for victim in victims:
        await asyncio.to_thread(victim.start)


async def outcomes_recorded(run: FaultRun) -> int:
    """A number that grows with every outcome an executor records in the store (before
    publishing it): the sum of the tasks' last finished dispatch numbers."""
    docs = run.store.tasks.find({"exec.done_no": {"$gte": 1}}, {"exec": 1})
    return sum([int(d["exec"]["done_no"]) async for d in docs])


async def attempts_in_hand(run: FaultRun) -> int:
    """Attempts an executor has claimed and not finished (their lease still running)."""
    docs = run.store.tasks.find({"exec.lease_until": {"$gt": now_ms()}}, {"exec": 1})
    unfinished = [
        d async for d in docs if int(d["exec"].get("done_no", -1)) < int(d["exec"]["claim_no"])
    ]
    return len(unfinished)


async def try_submitting_once(run: FaultRun, workload: Workload) -> None:
    """A client's attempt during an outage: it may fail; the client retries it later."""
    body = {"tasks": [item.submission() for item in workload.items]}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            await client.post(f"{run.stack.api.url}/v1/tasks/batch", headers=AUTH, json=body)
    except httpx.HTTPError:
        pass


async def restart_broker(
    run: FaultRun, *, submit_during: Workload | None = None, work_in_hand: bool = True
) -> None:
    """``rabbitmqctl stop_app`` while an executor holds an attempt, kept down until it has
    stored an outcome it can no longer publish (with ``work_in_hand``); a client may try to
    submit meanwhile; then ``start_app``, and every service must come back by itself."""
    # Counted first, so the attempt found in hand below is bound to add to it.
    before = await outcomes_recorded(run)
    if work_in_hand:

        async def busy() -> bool:
            return await attempts_in_hand(run) > 0

        await wait_for_async(busy, timeout=30, interval=0.05, message="an attempt in hand")
    async with broker_stopped():

        async def progressed() -> bool:
            return await outcomes_recorded(run) > before

        if work_in_hand:
            await wait_for_async(progressed, timeout=20, message="an outcome during the outage")
        if submit_during is not None:
            await try_submitting_once(run, submit_during)
    await run.wait_recovered()


async def restart_store(run: FaultRun, standin: DurableStandin, *, crash: bool = False) -> None:
    """Stop the stand-in (SIGTERM, or SIGKILL with ``crash``) until every service using it
    reports not ready, then start it again on the same port with the same files; every
    service must recover by itself."""
    await asyncio.to_thread(standin.stop, kill=crash)
    try:
        await run.wait_readiness(False, within=30, services=STORE_USERS)
    finally:
        await asyncio.to_thread(standin.start)
    await run.wait_recovered()


async def duplicate_and_poison(run: FaultRun) -> None:
    """Deliver every dispatch, event and hand-off so far again, and a poison message to
    every consumer."""
    await duplicate_everything(run)
    await inject_poisons(run, poisons())
