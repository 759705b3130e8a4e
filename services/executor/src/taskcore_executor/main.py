"""The executor process: composition root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys

import uvicorn
from taskcore.adapters.rabbit import EventEmitter, Publisher, broker_readiness, connect_broker
from taskcore.messages.topology import declare_topology
from taskcore.observability import health_app, http_server
from taskcore.outbox import OutboxRelay
from taskcore.registry import load_registry
from taskcore.service import open_store, port_for
from taskcore.settings import Settings

from taskcore_executor.consumer import Executor
from taskcore_executor.tasktypes.llm import close_task_types

# A CPU-bound task on a worker thread holds the GIL, and each socket operation of the
# event loop then waits up to the interpreter's switch interval (5 ms) to get it back:
# the "convoy effect". Measured beside one spinning thread, a store round trip took
# 68 ms at 5 ms and 18 ms at 1 ms (2.7 ms without the thread). Heartbeats, claims and
# cancel signals stay timely only with the shorter interval.
CPU_BOUND_SWITCH_INTERVAL_S = 0.001


def node_id(settings: Settings) -> str:
    return settings.node_id or f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-executor")
    store = await open_store(settings)
    background: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    switch_interval = sys.getswitchinterval()
    try:
        await declare_topology(
            await connection.channel(), settings.queue_type, declare=settings.declare_topology
        )
        publisher = await Publisher.open(connection)
        emitter = EventEmitter(publisher, linger_ms=settings.emit_linger_ms)
        registry = load_registry(settings)
        if any(task_type.cpu_bound for task_type in registry.all()):
            sys.setswitchinterval(min(switch_interval, CPU_BOUND_SWITCH_INTERVAL_S))
        executor = Executor(
            settings, store, connection, publisher, emitter, registry, node_id(settings)
        )

        broker = broker_readiness(connection)

        server = http_server(
            health_app("executor", [store.ping, broker]),
            settings.host,
            port_for("executor", settings),
        )
        relay = OutboxRelay(
            store.documents,
            publisher,
            after_s=settings.relay_after_seconds,
            interval_s=settings.relay_interval_seconds,
        )
        background = [
            asyncio.create_task(server.serve(), name="http"),
            asyncio.create_task(executor.heartbeat.run_forever(), name="heartbeat"),
            asyncio.create_task(relay.run_forever(), name="outbox-relay"),
        ]
        await executor.start()
        await stop.wait()
        # Stop taking work, let running tasks finish (the heartbeat keeps their leases),
        # hand back the rest, and only then stop the heartbeat and the relay.
        await executor.stop_consuming()
        await executor.drain(settings.shutdown_grace_seconds)
        await emitter.stop()
        await close_task_types(registry.all())  # provider clients of the LLM types
    finally:
        if server is not None:
            server.should_exit = True
        for task in background:
            if task.get_name() != "http":
                task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await connection.close()
        await store.close()
        sys.setswitchinterval(switch_interval)
