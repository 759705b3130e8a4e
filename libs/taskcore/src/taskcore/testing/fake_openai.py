"""A local fake of an OpenAI-compatible chat-completions API, for tests and demos.

It stands for an external LLM provider (the one thing tests may fake). It can be told to
be slow, to fail with 5xx, to answer 429 with ``Retry-After``, or to return invalid JSON
for the next k calls, to follow a script of outcomes call by call, or to refuse every key
but one (401, as a provider does with a revoked key), and it records every request:
in-flight high-water mark, arrival times, per-window counts. Control it from Python
(``configure``, ``stats``) or, from other processes, over HTTP:
``POST /_fake/behaviour`` (a partial ``Behaviour``), ``POST /_fake/reset``,
``GET /_fake/stats``.

    with FakeOpenAI() as fake:                 # runs uvicorn in a background thread
        fake.configure(rate_limit_next=1, retry_after=2)
        ... OpenAICompatProvider(base_url=fake.base_url, ...) ...
        assert fake.stats().max_in_flight <= 3

Run it on its own with ``python -m taskcore.testing.fake_openai --port 8089``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from taskcore.standin import free_port

DEFAULT_REPLY = {
    "summary": "A faithful short summary of the text.",
    "title": "The Fake Scene",
    "scene": "They met at the door and neither of them spoke.",
}
INVALID_JSON = 'Sure! Here is your JSON: {"summary": "unterminated'


class Behaviour(BaseModel):
    """What the next calls get. Counters (``*_next``) count down one per call."""

    delay_s: float = 0.0
    fail_next: int = 0
    fail_status: int = 500
    rate_limit_next: int = 0
    retry_after: float = 1.0
    invalid_json_next: int = 0
    # The completion text; None: DEFAULT_REPLY as JSON.
    reply: str | None = None
    # Outcomes for the next calls, one each, before any counter above: "ok", "fail",
    # "rate_limit", "invalid_json".
    script: list[Literal["ok", "fail", "rate_limit", "invalid_json"]] = []
    # Answer 401 to any request whose bearer key is not this one (None: take any).
    require_key: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    arrived_at: float
    finished_at: float
    status: int
    model: str
    authorization: str | None
    body: dict[str, Any]


@dataclass
class Stats:
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.requests)

    def counts_per_window(self, seconds: float = 60.0) -> dict[int, int]:
        """Requests by arrival, per fixed window of ``seconds`` (window number -> count)."""
        return dict(Counter(int(r.arrived_at // seconds) for r in self.requests))


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._behaviour = Behaviour()
        self._stats = Stats()
        # Bumped by reset(), so a call still running from before it is not counted after.
        self._generation = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}/_fake"

    # -- control from Python -------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        with self._lock:
            self._behaviour = self._behaviour.model_copy(
                update=Behaviour.model_validate(changes).model_dump(include=set(changes))
            )

    def reset(self) -> None:
        with self._lock:
            self._behaviour = Behaviour()
            self._stats = Stats()
            self._generation += 1

    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                in_flight=self._stats.in_flight,
                max_in_flight=self._stats.max_in_flight,
                requests=list(self._stats.requests),
            )

    # -- the server ----------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> FakeOpenAI:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="none",
            loop="asyncio",
            http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the fake OpenAI server did not start on port {self.port}")
            time.sleep(0.01)  # polling the server's own started flag, with a deadline
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -----------------------------------------------------------------

    def _next_outcome(self) -> tuple[Behaviour, str]:
        """The behaviour now, and what this call gets (counters decremented atomically)."""
        with self._lock:
            b = self._behaviour
            if b.script:
                self._behaviour = b.model_copy(update={"script": b.script[1:]})
                return b, b.script[0]
            if b.rate_limit_next > 0:
                self._behaviour = b.model_copy(update={"rate_limit_next": b.rate_limit_next - 1})
                return b, "rate_limit"
            if b.fail_next > 0:
                self._behaviour = b.model_copy(update={"fail_next": b.fail_next - 1})
                return b, "fail"
            if b.invalid_json_next > 0:
                self._behaviour = b.model_copy(
                    update={"invalid_json_next": b.invalid_json_next - 1}
                )
                return b, "invalid_json"
            return b, "ok"

    def _enter(self) -> tuple[float, int]:
        with self._lock:
            self._stats.in_flight += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)
            return time.time(), self._generation

    def _leave(
        self, entered: tuple[float, int], status: int, body: dict[str, Any], auth: str | None
    ) -> None:
        arrived, generation = entered
        record = RecordedRequest(
            arrived_at=arrived,
            finished_at=time.time(),
            status=status,
            model=str(body.get("model", "")),
            authorization=auth,
            body=body,
        )
        with self._lock:
            if generation == self._generation:
                self._stats.in_flight -= 1
                self._stats.requests.append(record)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake OpenAI-compatible API")

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            entered = self._enter()
            body: dict[str, Any] = {}
            status = 200
            try:
                body = await request.json()
                key = self._behaviour.require_key
                if key is not None and request.headers.get("authorization") != f"Bearer {key}":
                    status = 401
                    return JSONResponse(
                        {"error": {"message": "Incorrect API key provided", "type": "auth"}},
                        status_code=401,
                    )
                behaviour, outcome = self._next_outcome()
                if behaviour.delay_s:
                    await asyncio.sleep(behaviour.delay_s)  # the simulated slowness itself
                reply = _reply(behaviour, outcome, body)
                status = reply.status_code
                return reply
            finally:
                self._leave(entered, status, body, request.headers.get("authorization"))

        @app.post("/_fake/behaviour")
        async def set_behaviour(request: Request) -> dict[str, Any]:
            self.configure(**(await request.json()))
            with self._lock:
                return self._behaviour.model_dump()

        @app.post("/_fake/reset")
        async def reset() -> dict[str, str]:
            self.reset()
            return {"status": "reset"}

        @app.get("/_fake/stats")
        async def stats(window_s: float = 60.0) -> dict[str, Any]:
            s = self.stats()
            return {
                "in_flight": s.in_flight,
                "max_in_flight": s.max_in_flight,
                "total": s.total,
                "arrivals": [r.arrived_at for r in s.requests],
                "counts_per_window": {str(k): v for k, v in s.counts_per_window(window_s).items()},
            }

        return app


def _reply(behaviour: Behaviour, outcome: str, body: dict[str, Any]) -> JSONResponse:
    if outcome == "rate_limit":
        return JSONResponse(
            {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}},
            status_code=429,
            headers={"Retry-After": f"{behaviour.retry_after:g}"},
        )
    if outcome == "fail":
        return JSONResponse(
            {"error": {"message": "The server had an error", "type": "server_error"}},
            status_code=behaviour.fail_status,
        )
    if outcome == "invalid_json":
        content = INVALID_JSON
    else:
        content = behaviour.reply if behaviour.reply is not None else json.dumps(DEFAULT_REPLY)
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return JSONResponse(
        {
            "id": f"chatcmpl-fake-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": len(content.split()),
                "total_tokens": prompt_words + len(content.split()),
            },
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake OpenAI-compatible API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    uvicorn.run(FakeOpenAI(args.host, args.port).app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
