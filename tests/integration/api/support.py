"""Keys, an in-process API, SSE reading and small request helpers for the API tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aio_pika.abc
import httpx
import jwt
from taskcore.settings import ApiKey, Settings
from taskcore.standin import free_port
from taskcore.testing import wait_for_async
from taskcore_api.main import serve

ALICE = "key-alice"  # user, paid, team t1
BOB = "key-bob"  # user, free, no team
ROOT = "key-root"  # admin
CAROL = "key-carol"  # user, team t1 (alice's teammate)
DAVE = "key-dave"  # user, team t2
API_KEYS = {
    ALICE: ApiKey(user_id="alice", role="user", tier="paid", teams=["t1"]),
    BOB: ApiKey(user_id="bob", role="user", tier="free"),
    ROOT: ApiKey(user_id="root", role="admin", tier="paid"),
    CAROL: ApiKey(user_id="carol", role="user", tier="paid", teams=["t1"]),
    DAVE: ApiKey(user_id="dave", role="user", tier="paid", teams=["t2"]),
}
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"


def jwt_for(key: ApiKey, secret: str = JWT_SECRET, **claims: Any) -> str:
    """A JWT for the same identity as an API key (HS256, valid for an hour)."""
    payload: dict[str, Any] = {
        "sub": key.user_id,
        "role": key.role,
        "tier": key.tier,
        "teams": key.teams,
        "exp": int(time.time()) + 3600,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Sse:
    event: str
    id: str | None
    data: str
    comments: list[str]

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """The events of an open ``text/event-stream`` response, with the comments (keep-alive
    pings) that came before each."""
    event, event_id, data, comments = "message", None, [], []
    async for line in response.aiter_lines():
        if line == "":
            if data or event_id is not None:
                yield Sse(event, event_id, "\n".join(data), comments)
                comments = []
            event, event_id, data = "message", None, []
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


async def submit(
    client: httpx.AsyncClient, task_type: str = "diag.noop", **body: Any
) -> dict[str, Any]:
    response = await client.post("/v1/tasks", json={"task_type": task_type, **body})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


async def queue_messages(
    rabbitmq_url: str, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take every message now in ``queue`` (acked: the test owns this vhost)."""
    taken = []
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while (message := await q.get(fail=False, no_ack=True)) is not None:
            taken.append(message)
    return taken


@dataclass
class RunningApi:
    url: str
    settings: Settings

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {**(auth(key) if key else {}), **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.url, headers=headers, **kwargs)


StartApi = Callable[..., Awaitable[RunningApi]]


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[RunningApi]:
    """The API service body in this event loop, serving real HTTP on a free port."""
    keys = settings.api_keys or API_KEYS
    settings = settings.model_copy(update={"api_keys": keys, "port": free_port()})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    url = f"http://127.0.0.1:{settings.port}"

    async def ready() -> bool:
        if task.done():
            task.result()  # raises what the API died of
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/readyz", timeout=1)).status_code == 200
        return False

    try:
        await wait_for_async(ready, timeout=20, message="the API to be ready")
        yield RunningApi(url, settings)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
