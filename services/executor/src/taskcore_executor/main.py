"""The executor process: composition root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

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


def node_id(settings: Settings) -> str:
    return settings.node_id or f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-executor")
    store = await open_store(settings)
    background: list[asyncio.Task[None]] = []
    server: uvicorn.Server | None = None
    try:
        await declare_topology(await connection.channel())
        publisher = await Publisher.open(connection)
        emitter = EventEmitter(publisher)
        emitter.start()
        registry = load_registry(settings)
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
            store,
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
