"""The event-bridge process: composition root."""

from __future__ import annotations

import asyncio
import contextlib

from taskcore.adapters.rabbit import Publisher, broker_readiness, connect_broker
from taskcore.messages.topology import declare_topology
from taskcore.observability import health_app, http_server
from taskcore.service import port_for
from taskcore.settings import Settings

from taskcore_event_bridge.consumer import Bridge


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-event-bridge")
    try:
        await declare_topology(
            await connection.channel(), settings.queue_type, declare=settings.declare_topology
        )
        publisher = await Publisher.open(connection)
        bridge = Bridge(connection, publisher, max_message_bytes=settings.max_message_bytes)

        broker = broker_readiness(connection)

        server = http_server(
            health_app("event-bridge", [broker]), settings.host, port_for("event-bridge", settings)
        )
        server_task = asyncio.create_task(server.serve(), name="http")
        await bridge.start()
        await stop.wait()
        await bridge.stop()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
    finally:
        await connection.close()
