"""The aggregator process: composition root."""

from __future__ import annotations

import asyncio
import contextlib

from taskcore.adapters.rabbit import Publisher, broker_readiness, connect_broker
from taskcore.messages.topology import declare_topology
from taskcore.observability import health_app, http_server
from taskcore.service import open_store, port_for
from taskcore.settings import Settings

from taskcore_aggregator.config import AggregatorSettings
from taskcore_aggregator.consumer import Aggregator
from taskcore_aggregator.timekeeping import Timekeeping


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    config = AggregatorSettings()
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-aggregator")
    store = await open_store(settings)
    try:
        await declare_topology(
            await connection.channel(), settings.queue_type, declare=settings.declare_topology
        )
        publisher = await Publisher.open(connection)
        aggregator = Aggregator(settings, config, store, connection, publisher)

        broker = broker_readiness(connection)

        server = http_server(
            health_app("aggregator", [store.ping, broker]),
            settings.host,
            port_for("aggregator", settings),
        )
        server_task = asyncio.create_task(server.serve(), name="http")
        await aggregator.start()
        timekeeping = Timekeeping(settings, store, publisher)
        timekeeping.start()
        await stop.wait()
        await timekeeping.stop()
        await aggregator.stop()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await server_task
    finally:
        await connection.close()
        await store.close()
