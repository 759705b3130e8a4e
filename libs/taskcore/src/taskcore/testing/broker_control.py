"""Taking the RabbitMQ application down and up again, and reading queue depths, for fault
tests (through ``rabbitmqctl``).

``stop_app`` stops the broker for everyone using its node, whatever the vhost: every
connection is closed; vhosts, durable queues and persistent messages survive. Tests that
use it must run alone. ``rabbitmqctl`` talks to the node ``RABBITMQ_NODENAME`` names (the
local default node when unset), so a developer can point these tests at a private node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=timeout
    )
    return done.stdout


def stop_broker() -> None:
    """Stop the RabbitMQ application (the Erlang node stays up, so it can be started)."""
    rabbitmqctl("stop_app")


def start_broker() -> None:
    """Start the RabbitMQ application and return once it accepts clients; a no-op when it
    is running already."""
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """The broker is down inside the block and back up after it, even when the block fails
    (other tests share the broker)."""
    try:
        await asyncio.to_thread(stop_broker)
        yield
    finally:
        await asyncio.to_thread(start_broker)


def ensure_broker_running(url: str) -> None:
    """Start the RabbitMQ application if it does not accept connections at ``url``'s host
    and port (a test that stopped it was cut off before it could start it again)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 2):
            return
    except OSError:
        start_broker()


def queue_depths(vhost: str) -> dict[str, int]:
    """Every queue of ``vhost`` with its message count, ready and unacknowledged together."""
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", vhost, "name", "messages", "--formatter", "json")
    )
    return {str(row["name"]): int(row["messages"]) for row in rows}


def consumer_counts(vhost: str) -> dict[str, int]:
    """Every queue of ``vhost`` with how many consumers it has."""
    rows = json.loads(
        rabbitmqctl("list_queues", "-p", vhost, "name", "consumers", "--formatter", "json")
    )
    return {str(row["name"]): int(row["consumers"]) for row in rows}
