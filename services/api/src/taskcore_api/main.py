"""The API process: composition root."""

from __future__ import annotations

import asyncio
import contextlib
import os

from taskcore.adapters.rabbit import Publisher, broker_readiness, connect_broker
from taskcore.messages.topology import declare_topology
from taskcore.observability import http_server
from taskcore.outbox import OutboxRelay
from taskcore.quotas import QuotaPolicy, ensure_quota_indexes
from taskcore.registry import load_registry
from taskcore.scheduling.documents import ScheduleDocuments
from taskcore.service import ConfigurationError, open_store, port_for
from taskcore.settings import Settings
from taskcore.tracing import instrument_app

from taskcore_api.app import create_app
from taskcore_api.deadletters.worker import DeadLetterWorker
from taskcore_api.deps import Deps
from taskcore_api.faults import submission_publisher
from taskcore_api.handlers.queries import ensure_listing_indexes
from taskcore_api.identity.jwt_tokens import JwtVerifier
from taskcore_api.identity.keyring import InvalidKeys, KeyFileWatcher, KeyRing
from taskcore_api.identity.stream_tokens import StreamTokens
from taskcore_api.live import LiveEvents
from taskcore_api.user_slots import UserSlots


def _identity(settings: Settings) -> tuple[KeyRing, JwtVerifier | None]:
    """The configured keys and JWT verifier; a wrong setting stops the start, saying so."""
    try:
        return KeyRing(settings.api_keys), JwtVerifier.from_settings(settings)
    except InvalidKeys as exc:
        raise ConfigurationError(f"TASKCORE_API_KEYS is not valid: {exc}.") from None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    keys, jwts = _identity(settings)
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-api")
    store = await open_store(settings)
    watcher: KeyFileWatcher | None = None
    try:
        channel = await connection.channel()
        await declare_topology(channel, settings.queue_type, declare=settings.declare_topology)
        await ensure_quota_indexes(store)
        await ensure_listing_indexes(store)
        await ScheduleDocuments(store.db["schedules"], store.documents.clock).ensure_indexes()
        publisher = await Publisher.open(connection)
        live = LiveEvents()
        await live.start(connection)
        if settings.api_keys_file:
            watcher = KeyFileWatcher(
                keys, settings.api_keys, settings.api_keys_file, settings.api_keys_poll_seconds
            )
            watcher.start()
        deps = Deps(
            settings=settings,
            store=store,
            publisher=publisher,
            registry=load_registry(settings),
            keys=keys,
            live=live,
            quota_policy=QuotaPolicy.from_settings(settings),
            submission_publisher=submission_publisher(publisher, os.environ),
            jwts=jwts,
            stream_tokens=StreamTokens(settings.stream_token_secret),
            stream_slots=UserSlots("open event streams", settings.max_streams_per_user),
            wait_slots=UserSlots("waiting submissions", settings.max_waits_per_user),
        )

        broker = broker_readiness(connection)

        app = create_app(deps, [store.ping, broker])
        instrument_app(app, settings)
        server = http_server(app, settings.host, port_for("api", settings))
        relay = OutboxRelay(
            store.documents,
            publisher,
            after_s=settings.relay_after_seconds,
            interval_s=settings.relay_interval_seconds,
        )
        relay_task = asyncio.create_task(relay.run_forever(), name="outbox-relay")
        dead_letters = DeadLetterWorker(
            store,
            connection,
            publisher,
            deps.registry,
            max_message_bytes=settings.max_message_bytes,
        )
        await dead_letters.start()
        server_task = asyncio.create_task(server.serve(), name="http")
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        # Open event streams would hold the server's shutdown: end them first.
        live.close()
        server.should_exit = True
        await server_task
        await deps.deliveries.drain(timeout_s=10)
        await dead_letters.stop()
        relay_task.cancel()
        stop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay_task
    finally:
        if watcher is not None:
            await watcher.stop()
        await connection.close()
        await store.close()
