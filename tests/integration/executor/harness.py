"""The executor and the aggregator as in-process services over the real broker and store.

Each service runs its real composition root (``serve(settings, stop)``) as a task on the
test's event loop, so the tests exercise exactly what ``taskcore executor`` runs, and can
still look at module state (``plugin.STARTED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.messages.topology import DEAD_LETTER_QUEUE, TASKS_EXCHANGE
from taskcore.registry import load_registry
from taskcore.settings import Settings
from taskcore.standin import free_port
from taskcore.submission import NewTask, submit_tasks
from taskcore.testing import wait_for_async

PLUGIN = "tests.integration.executor.plugin"
ServeFn = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class Service:
    name: str
    settings: Settings
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    async def wait_ready(self, within_s: float = 20.0) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:

            async def ready() -> bool:
                if self.task.done():
                    self.task.result()  # raise what made it stop
                    raise RuntimeError(f"{self.name} stopped before it was ready")
                try:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for_async(ready, timeout=within_s, interval=0.05, message=self.name)

    async def stop(self, within_s: float = 40.0) -> None:
        self.stop_event.set()
        await asyncio.wait_for(asyncio.shield(self.task), within_s)


class System:
    """One test's broker vhost and database, with the services it started."""

    def __init__(
        self, settings: Settings, store: Store, connection: AbstractRobustConnection
    ) -> None:
        self.settings = settings.model_copy(update={"plugins": [PLUGIN]})
        self.store = store
        self.connection = connection
        self.registry = load_registry(self.settings)
        self.services: list[Service] = []
        self.publisher: Publisher

    async def open(self) -> None:
        self.publisher = await Publisher.open(self.connection)

    async def close(self) -> None:
        """Stop every service; one that does not stop in time is cancelled, so nothing of
        this test keeps running into the next one."""
        failures: list[Exception] = []
        for service in reversed(self.services):
            if service.task.done():
                continue
            try:
                await service.stop()
            except Exception as exc:
                failures.append(exc)
                service.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await service.task
        if failures:
            raise failures[0]

    # ---- services ----------------------------------------------------------------------

    async def start(self, name: str, serve: ServeFn, **overrides: Any) -> Service:
        settings = self.settings.model_copy(
            update={"port": free_port(), "node_id": f"{name}-{uuid.uuid4().hex[:6]}", **overrides}
        )
        stop = asyncio.Event()
        service = Service(name, settings, stop, asyncio.create_task(serve(settings, stop)))
        self.services.append(service)
        await service.wait_ready()
        return service

    async def start_executor(self, **overrides: Any) -> Service:
        from taskcore_executor.main import serve

        return await self.start("executor", serve, **overrides)

    async def start_aggregator(self, **overrides: Any) -> Service:
        from taskcore_aggregator.main import serve

        return await self.start("aggregator", serve, **overrides)

    # ---- tasks -------------------------------------------------------------------------

    async def submit(
        self,
        task_type: str,
        parameters: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        tier: str = "paid",
        user_id: str = "alice",
    ) -> str:
        [task_id] = await self.submit_many(
            [(task_type, parameters or {})],
            priority=priority,
            max_attempts=max_attempts,
            tier=tier,
            user_id=user_id,
        )
        return task_id

    async def submit_many(
        self,
        items: list[tuple[str, dict[str, Any]]],
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        tier: str = "paid",
        user_id: str = "alice",
    ) -> list[str]:
        """Through the same dispatch path as the API (``submit_tasks``)."""
        batch = []
        for task_type, parameters in items:
            kind = self.registry.get(task_type)
            batch.append(
                NewTask(
                    user_id=user_id,
                    task_type=task_type,
                    parameters=kind.Params.model_validate(parameters).model_dump(mode="json"),
                    priority=priority,
                    max_attempts=max_attempts or kind.retry.max_attempts,
                    tier="free" if tier == "free" else "paid",
                    subtask_policy=kind.subtask_policy.value,
                )
            )
        results = await submit_tasks(self.store, self.publisher, batch)
        return [r.task.id for r in results]

    async def doc(self, task_id: str) -> Doc:
        doc = await self.store.tasks.find_one({"_id": task_id})
        assert doc is not None, f"no task {task_id}"
        return doc

    async def wait_status(self, task_id: str, *statuses: str, within_s: float = 20.0) -> Doc:
        async def reached() -> Doc | None:
            doc = await self.doc(task_id)
            return doc if doc["status"] in statuses else None

        doc = await wait_for_async(
            reached, timeout=within_s, interval=0.05, message=f"{task_id} in {statuses}"
        )
        assert doc is not None
        return doc

    async def events(self, task_id: str, type_: str | None = None) -> list[Doc]:
        query: Doc = {"task_id": task_id}
        if type_ is not None:
            query["type"] = type_
        return await self.store.events.find(query).sort("sequence", 1).to_list(None)

    async def completions(self, task_ids: list[str]) -> dict[str, int]:
        """``task.completed`` events per task id, from the event log."""
        counts = dict.fromkeys(task_ids, 0)
        cursor = self.store.events.find(
            {"task_id": {"$in": task_ids}, "type": "task.completed"}, {"task_id": 1}
        )
        async for doc in cursor:
            counts[doc["task_id"]] += 1
        return counts

    # ---- raw messages ------------------------------------------------------------------

    async def publish_raw(
        self, body: bytes, headers: dict[str, Any] | None = None, routing_key: str = "paid"
    ) -> None:
        message = aio_pika.Message(
            body, headers=headers or {}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await self.publisher.publish(TASKS_EXCHANGE, routing_key, message)

    async def dead_letters(
        self, count: int, within_s: float = 15.0
    ) -> list[AbstractIncomingMessage]:
        """Take ``count`` messages off the dead-letter queue (acking them)."""
        channel = await self.connection.channel()
        queue = await channel.get_queue(DEAD_LETTER_QUEUE)
        taken: list[AbstractIncomingMessage] = []

        async def enough() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                taken.append(message)
            return len(taken) >= count

        try:
            await wait_for_async(enough, timeout=within_s, interval=0.05, message="dead letters")
        finally:
            await channel.close()
        return taken


def text_headers(message: AbstractIncomingMessage) -> dict[str, str]:
    return {
        k: v.decode() if isinstance(v, bytes) else str(v)
        for k, v in (message.headers or {}).items()
    }
