"""TEST-ONLY fault injection. Never set these variables in a deployment.

``TASKCORE_FAULT_CRASH_AFTER_STORE_WRITE=1``, read once when the API starts, makes the
process die with ``os._exit(137)`` (as if SIGKILLed) at the first publish of a
submission, that is right after the new task's document is stored and before any
message reaches the broker. The fault-injection tests use it to prove that such a crash
neither loses the task nor publishes a message for a task that does not exist: the
outbox relay of the restarted API dispatches it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import aio_pika
from taskcore.adapters.rabbit import Publisher

log = logging.getLogger(__name__)

CRASH_AFTER_STORE_WRITE = "TASKCORE_FAULT_CRASH_AFTER_STORE_WRITE"
CRASH_EXIT_STATUS = 137


class CrashBeforePublish(Publisher):
    """A publisher that kills the process instead of publishing."""

    def __init__(self, inner: Publisher) -> None:
        super().__init__(inner.channel)

    async def publish(self, exchange: str, routing_key: str, msg: aio_pika.Message) -> None:
        log.critical("Fault injection: exiting between the store write and the publish.")
        os._exit(CRASH_EXIT_STATUS)


def submission_publisher(publisher: Publisher, environ: Mapping[str, str]) -> Publisher:
    """The publisher submissions use: the real one, unless the test fault is armed."""
    if environ.get(CRASH_AFTER_STORE_WRITE, "").strip().lower() in ("1", "true", "yes"):
        log.warning(
            "%s is set: this API will crash on its first submission.", CRASH_AFTER_STORE_WRITE
        )
        return CrashBeforePublish(publisher)
    return publisher
