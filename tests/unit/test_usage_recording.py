"""An attempt records each answered provider call as one event, whatever the broker does:
confirmed at once, or, when the broker does not confirm in time, carried by the outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskcore.domain.events import EventType, TaskEvent
from taskcore.messages.envelope import TaskMessage
from taskcore_executor import context
from taskcore_executor.context import ExecutionContext, RunningTask, ThreadContext
from taskcore_executor.outcomes import Sequencer


class Broker:
    """Stands for the broker behind the emitter: confirms, or never answers."""

    def __init__(self, confirms: bool) -> None:
        self.confirms = confirms
        self.sent: list[TaskEvent] = []

    def emit(self, *events: TaskEvent) -> asyncio.Future[None]:
        self.sent.extend(events)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.confirms:
            future.set_result(None)
        return future


def attempt(broker: Broker) -> tuple[ExecutionContext, RunningTask]:
    msg = TaskMessage(task_id="t1", task_type="llm.chat", user_id="alice", tier="free")
    running = RunningTask(msg, 2, Sequencer("t1", 1001, 2000), "t1")
    running.team_id = "t9"
    none: Any = None  # nothing else is touched while the block has sequences to spare
    ctx = ExecutionContext(
        running, store=none, publisher=none, emitter=broker, registry=none, node="n",
        lease_s=30, guard=none,
    )  # fmt: skip
    return ctx, running


async def record(ctx: ExecutionContext | ThreadContext) -> None:
    async with ctx.spend.call("openai", tokens=100, cost_nanos=50) as call:
        await call.record(model="m-1", prompt_tokens=30, completion_tokens=7, cost_nanos=41)


async def test_a_call_is_one_usage_event_naming_who_and_what_it_was_for() -> None:
    broker = Broker(confirms=True)
    ctx, running = attempt(broker)

    await record(ctx)

    [event] = broker.sent
    assert (event.type, event.sequence, event.event_id) == (
        EventType.USAGE_RECORDED,
        1001,
        "t1:1001",
    )
    assert event.data == {
        "provider": "openai",
        "model": "m-1",
        "prompt_tokens": 30,
        "completion_tokens": 7,
        "cost_nanos": 41,
        "currency": "USD",
        "user_id": "alice",
        "team_id": "t9",
        "task_type": "llm.chat",
        "tier": "free",
        "attempt": 2,
    }
    assert running.unsent == []


async def test_a_call_the_broker_does_not_confirm_goes_with_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(context, "USAGE_CONFIRM_TIMEOUT_S", 0.05)
    broker = Broker(confirms=False)
    ctx, running = attempt(broker)

    await record(ctx)

    assert running.unsent == broker.sent
    assert running.unsent[0].type is EventType.USAGE_RECORDED


async def test_a_task_on_a_worker_thread_records_its_calls_on_the_executors_loop() -> None:
    broker = Broker(confirms=True)
    ctx, _ = attempt(broker)
    thread_ctx = ThreadContext(ctx, asyncio.get_running_loop())

    await asyncio.to_thread(asyncio.run, record(thread_ctx))

    [event] = broker.sent
    assert (event.type, event.data["cost_nanos"]) == (EventType.USAGE_RECORDED, 41)
