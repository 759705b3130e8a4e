"""Running one service process: logging, settings, signals, fail-fast start.

A service is an ``async def body(settings, stop)`` that starts its consumers and HTTP
server and returns once ``stop`` is set and it has shut down cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from pymongo.errors import PyMongoError

from taskcore.adapters.mongo import Store, connect_mongo
from taskcore.adapters.rabbit import BrokerUnavailable
from taskcore.messages.topology import TopologyMismatch, TopologyMissing
from taskcore.observability import configure_logging, redact_url
from taskcore.settings import DEFAULT_PORTS, Settings
from taskcore.tracing import setup_tracing

log = logging.getLogger(__name__)

ServiceBody = Callable[[Settings, asyncio.Event], Awaitable[None]]


class StoreUnavailable(RuntimeError):
    pass


class ConfigurationError(RuntimeError):
    """The service's configuration is wrong; the message says which setting and why."""


async def open_store(settings: Settings) -> Store:
    """Connect to MongoDB and create indexes, failing fast with one clear sentence."""
    if not settings.mongo_url:
        raise StoreUnavailable(
            "MONGO_URL is not set; point it at MongoDB (or run `taskcore dev`, which starts "
            "an embedded stand-in)."
        )
    client = connect_mongo(settings.mongo_url, bytes_written=settings.store_accounting)
    store = Store(client, settings.mongo_db)
    try:
        await store.ping()
        await store.ensure_indexes()
    except PyMongoError as exc:
        await store.close()
        raise StoreUnavailable(
            f"MongoDB is not reachable at {redact_url(settings.mongo_url)} "
            f"({exc.__class__.__name__}); "
            "start it or set MONGO_URL."
        ) from exc
    return store


def port_for(service: str, settings: Settings) -> int:
    return settings.port or DEFAULT_PORTS[service]


def run_service(service: str, body: ServiceBody, settings: Settings | None = None) -> int:
    settings = settings or Settings()
    configure_logging(service, settings)
    setup_tracing(service, settings)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_main(service, body, settings))
    except (
        BrokerUnavailable,
        StoreUnavailable,
        ConfigurationError,
        TopologyMismatch,
        TopologyMissing,
    ) as exc:
        print(f"taskcore {service}: {exc}", file=sys.stderr)
        return 2
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (it comes with uvicorn[standard]): it cuts the per-message
    cost of every service noticeably; the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _main(service: str, body: ServiceBody, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("taskcore %s is starting.", service)
    await body(settings, stop)
    log.info("taskcore %s stopped.", service)
