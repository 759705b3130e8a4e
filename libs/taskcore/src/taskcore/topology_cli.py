"""``taskcore topology``: declare the broker topology once, as a deployment step.

With ``TASKCORE_DECLARE_TOPOLOGY=false`` the services only check that the topology exists,
so their broker users need no configure rights; this command, run with a user that has
them (``RABBITMQ_URL``) and the deployment's ``TASKCORE_QUEUE_TYPE``, declares it. It is
idempotent: run it on every release. Exit status 0 done, 2 the broker refused.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from taskcore.adapters.rabbit import BrokerUnavailable, connect_broker
from taskcore.messages.topology import TopologyMismatch, declare_topology, queue_names
from taskcore.settings import Settings


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = __doc__


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        asyncio.run(_declare(settings))
    except (BrokerUnavailable, TopologyMismatch) as exc:
        print(f"taskcore topology: {exc}", file=sys.stderr)
        return 2
    print(
        f"taskcore topology: declared {len(queue_names())} {settings.queue_type} queues "
        "and their exchanges and bindings."
    )
    return 0


async def _declare(settings: Settings) -> None:
    connection = await connect_broker(settings.rabbitmq_url, name="taskcore-topology")
    try:
        await declare_topology(await connection.channel(), settings.queue_type)
    finally:
        await connection.close()
