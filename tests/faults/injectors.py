"""Duplicate deliveries and poison messages, published straight onto the broker.

Duplicates are byte-for-byte what the services themselves publish: a task's dispatch
message (as the API's outbox sends it), its logged events (as the executor's emitter
sends them) and the aggregator's after-commit hand-off of them to the bridge. Each must be
harmless: no second run of finished work, no second event in the log, no second
terminal event for a subscriber that deduplicates by id.

Poison messages are unreadable for the consumer they reach; each must end as exactly one
dead letter (its record id is the message id given here).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher, connect_broker
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.messages.envelope import CommittedBatch, Dispatch, TaskMessage
from taskcore.messages.topology import (
    COMMITTED_ROUTING_KEY,
    INTERNAL_EVENTS_EXCHANGE,
    TASKS_EXCHANGE,
    dispatch_routing_key,
)
from taskcore.outbox import amqp_message as dispatch_message
from taskcore_aggregator.projection import event_from_doc, fold_from

from tests.faults.harness import FaultRun


@asynccontextmanager
async def publisher_for(run: FaultRun) -> AsyncIterator[Publisher]:
    connection = await connect_broker(run.stack.env["RABBITMQ_URL"], name="fault-injector")
    try:
        yield await Publisher.open(connection)
    finally:
        await connection.close()


def dispatches_of(doc: Doc) -> list[Dispatch]:
    """The task messages sent for the task so far: the API's first one and, when it was
    retried, the latest retry."""
    numbers = sorted({1, int((doc.get("exec") or {}).get("dispatch_no") or 1)})
    return [
        Dispatch(
            message=TaskMessage(
                task_id=doc["_id"],
                task_type=doc["task_type"],
                user_id=doc["user_id"],
                tier="paid",
                priority=doc.get("priority", 0),
                parameters=doc.get("parameters") or {},
                dispatch=n,
                retry_count=n - 1,
            )
        )
        for n in numbers
    ]


@dataclass
class Duplicated:
    dispatches: int = 0
    events: int = 0
    hand_offs: int = 0
    tasks: int = 0  # tasks whose dispatches were duplicated


async def duplicate_everything(run: FaultRun) -> Duplicated:
    """Re-publish every task's first and latest dispatch, every logged event and a hand-off
    of each task's logged events to the bridge, as they stand now."""
    done = Duplicated()
    logs: dict[str, list[Doc]] = {}
    async for e in run.store.events.find({}).sort([("task_id", 1), ("sequence", 1)]):
        logs.setdefault(e["task_id"], []).append(e)
    async with publisher_for(run) as publisher:
        async for doc in run.store.tasks.find({}):
            if _not_due_yet(doc):
                continue  # nothing was dispatched for it yet: nothing to duplicate
            done.tasks += 1
            for d in dispatches_of(doc):
                await publisher.publish(d.exchange, d.key(), dispatch_message(d))
                done.dispatches += 1
        for docs in logs.values():
            events = [event_from_doc(e) for e in docs]
            await publisher.publish_events(events)
            done.events += len(events)
            _, items = fold_from(None, events)
            body = CommittedBatch(items=items).model_dump_json().encode()
            await publisher.publish(
                INTERNAL_EVENTS_EXCHANGE, COMMITTED_ROUTING_KEY, amqp_message(body)
            )
            done.hand_offs += 1
    return done


def _not_due_yet(doc: Doc) -> bool:
    due = doc.get("scheduled_for")
    if due is None:
        return False
    moment = due if isinstance(due, datetime) else datetime.fromisoformat(str(due))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return moment > datetime.now(UTC)


@dataclass(frozen=True)
class Poison:
    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, str | int]
    reason: str  # the dead-letter reason its consumer must give
    source: str  # the consumer that must dead-letter it


def poisons() -> list[Poison]:
    """One unreadable message for each consumer of the pipeline."""
    run = uuid.uuid4().hex[:8]
    task_body = TaskMessage(task_id=f"ghost{run}", task_type="diag.noop", user_id="alice")
    ghost = dispatch_message(Dispatch(message=task_body))  # well formed, for no stored task
    ghost_headers = {k: v for k, v in ghost.headers.items() if isinstance(v, str | int)}
    return [
        Poison(
            f"poison-{run}-executor-body",
            TASKS_EXCHANGE,
            dispatch_routing_key("paid"),
            b"\x00 not a task message",
            {},
            "malformed",
            "executor",
        ),
        Poison(
            f"poison-{run}-executor-headers",
            TASKS_EXCHANGE,
            dispatch_routing_key("paid"),
            task_body.model_dump_json().encode(),
            {},
            "missing_headers",
            "executor",
        ),
        Poison(
            f"poison-{run}-executor-ghost",
            TASKS_EXCHANGE,
            dispatch_routing_key("paid"),
            ghost.body,
            ghost_headers,
            "unknown_task",
            "executor",
        ),
        Poison(
            f"poison-{run}-aggregator",
            INTERNAL_EVENTS_EXCHANGE,
            "task.completed",
            b'{"events": [{"oops": true}]}',
            {},
            "malformed",
            "aggregator",
        ),
        Poison(
            f"poison-{run}-bridge",
            INTERNAL_EVENTS_EXCHANGE,
            COMMITTED_ROUTING_KEY,
            b'{"items": [{"event": 1}]}',
            {},
            "malformed",
            "event-bridge",
        ),
    ]


async def inject_poisons(run: FaultRun, batch: list[Poison]) -> None:
    async with publisher_for(run) as publisher:
        for p in batch:
            msg = amqp_message(p.body, headers=p.headers, message_id=p.message_id)
            await publisher.publish(p.exchange, p.routing_key, msg)
    run.poison_ids.update(p.message_id for p in batch)


async def dead_letter_reasons(
    store: Store, ids: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """Record id -> (reason, source) of the parked dead letters among ``ids``."""
    return {
        d["_id"]: (d.get("reason"), d.get("source"))
        async for d in store.dead_letters.find({"_id": {"$in": ids}})
    }
