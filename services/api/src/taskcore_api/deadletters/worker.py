"""The dead-letter background unit of the API process: the parker, and a sweep that
finishes work whose driver died (half-done replays and discards, bulk replays)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from aio_pika.abc import AbstractRobustConnection
from taskcore.adapters.mongo import Store
from taskcore.adapters.rabbit import Publisher
from taskcore.poison import DEFAULT_MAX_MESSAGE_BYTES
from taskcore.registry import TaskTypeRegistry

from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.jobs import ReplayJobs
from taskcore_api.deadletters.parker import DeadLetterParker
from taskcore_api.deadletters.results import ReplayRefused
from taskcore_api.deadletters.settings import DeadLetterSettings, dead_letter_settings

log = logging.getLogger(__name__)

# Strong references to job runs started in this process (asyncio keeps only weak ones).
_RUNS: dict[str, asyncio.Task[bool]] = {}


def process_owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_OWNER = process_owner()


def run_job_soon(jobs: ReplayJobs, job_id: str) -> None:
    """Run a bulk replay in the background unless this process already runs it (the job's
    lease keeps other processes from running it twice)."""
    running = _RUNS.get(job_id)
    if running is not None and not running.done():
        return
    task = asyncio.create_task(jobs.run(job_id), name=f"dlq-replay-job-{job_id}")
    _RUNS[job_id] = task
    task.add_done_callback(lambda t: _RUNS.pop(job_id, None) if _RUNS.get(job_id) is t else None)


def actions_for(
    store: Store,
    publisher: Publisher,
    registry: TaskTypeRegistry,
    settings: DeadLetterSettings | None = None,
) -> tuple[DeadLetterActions, ReplayJobs]:
    actions = DeadLetterActions(store, publisher, registry, settings or dead_letter_settings())
    return actions, ReplayJobs(actions, _OWNER)


class DeadLetterWorker:
    def __init__(
        self,
        store: Store,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        registry: TaskTypeRegistry,
        settings: DeadLetterSettings | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.settings = settings or dead_letter_settings()
        self.actions, self.jobs = actions_for(store, publisher, registry, self.settings)
        self.parker = DeadLetterParker(
            store, connection, registry, self.settings, max_message_bytes
        )
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.actions.repo.ensure_indexes()
        await self.parker.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="dlq-sweep")

    async def stop(self) -> None:
        await self.parker.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        runs = list(_RUNS.values())
        for run in runs:
            run.cancel()
        # A cancelled run leaves its lease to expire; another process then resumes it.
        await asyncio.gather(*runs, return_exceptions=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("The dead-letter sweep failed; it will try again.")
            await asyncio.sleep(self.settings.sweep_interval_seconds)

    async def sweep_once(self) -> None:
        for stale in await self.actions.repo.stale():
            try:
                outcome = await self.actions.resume(stale["_id"], stale["state"])
            except ReplayRefused as refused:
                log.warning(
                    "The abandoned %s of %s was refused: %s", stale["state"], stale["_id"], refused
                )
                continue
            except Exception:
                log.exception(
                    "Finishing the abandoned %s of %s failed.", stale["state"], stale["_id"]
                )
                continue
            if outcome is not None:
                log.warning(
                    "Finished the abandoned %s of dead letter %s.", stale["state"], stale["_id"]
                )
        for job_id in await self.jobs.runnable():
            run_job_soon(self.jobs, job_id)
