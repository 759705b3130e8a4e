"""Event streams for chaos tests: realistic task histories, then duplicated and shuffled.

Task documents and ``task.submitted`` events come from ``taskcore.submission``, exactly
as the API makes them; the later events carry our producers' payloads and sequences
(reserved blocks, so with gaps). The expected projections are the pure fold of each
task's events: what one aggregator reading the log in order must produce.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskcore.adapters.mongo import Doc, Store
from taskcore.adapters.rabbit import Publisher
from taskcore.adapters.rabbit import message as amqp_message
from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.domain.evolve import fold
from taskcore.domain.task import Task
from taskcore.messages.envelope import EventBatch
from taskcore.messages.topology import INTERNAL_EVENTS_EXCHANGE
from taskcore.submission import NewTask, new_task_document

T0 = datetime(2026, 3, 1, tzinfo=UTC)
KINDS = ("ok", "ok", "retry_ok", "dead", "replayed", "cancelled", "running")


def error(message: str, *, retryable: bool = True) -> dict[str, Any]:
    return {"type": "RuntimeError", "message": message, "retryable": retryable}


@dataclass
class History:
    """One task's events, built in order with realistic sequences."""

    task_id: str
    submitted: TaskEvent
    events: list[TaskEvent] = field(default_factory=list)
    next_seq: int = 2

    def __post_init__(self) -> None:
        self.events.append(self.submitted)

    def add(self, type_: EventType, data: dict[str, Any] | None = None) -> TaskEvent:
        seq = self.next_seq
        self.next_seq += 1
        event = TaskEvent(
            event_id=event_id_for(self.task_id, seq),
            task_id=self.task_id,
            sequence=seq,
            type=type_,
            occurred_at=T0 + timedelta(milliseconds=seq),
            data=data or {},
        )
        self.events.append(event)
        return event

    def claim(self, attempt: int, progress: int = 2) -> None:
        """A claim reserves a block of 1000 sequences; the attempt starts and reports."""
        self.next_seq = max(self.next_seq, 1000 * (attempt - 1) + 2)
        self.add(EventType.STARTED, {"node_id": f"node-{attempt}", "attempt": attempt})
        for i in range(progress):
            self.add(EventType.PROGRESS, {"progress": {"step": i, "attempt": attempt}})


def play(history: History, kind: str, rng: random.Random) -> None:
    """Append the events of one kind of life to a submitted task's history."""
    h = history
    if kind == "ok":
        h.claim(1, rng.randint(0, 4))
        h.add(EventType.COMPLETED, {"result": {"value": rng.randint(0, 99)}})
    elif kind == "retry_ok":
        h.claim(1)
        h.add(EventType.RETRYING, {"error": error("flaky"), "retry_count": 1})
        h.claim(2)
        h.add(EventType.COMPLETED, {"result": {"value": 1}})
    elif kind == "dead":
        h.claim(1)
        h.add(EventType.RETRYING, {"error": error("down"), "retry_count": 1})
        h.claim(2, 1)
        h.add(
            EventType.DEAD_LETTERED,
            {"error": error("down"), "reason": "attempts_exhausted", "retry_count": 1},
        )
    elif kind == "replayed":
        play(h, "dead", rng)
        h.add(EventType.REPLAYED, {})
        h.claim(4)
        h.add(EventType.COMPLETED, {"result": {"value": "again"}})
    elif kind == "cancelled":
        h.add(EventType.CANCELLED, {"reason": "cancel requested"})
    elif kind == "failed_child":
        h.claim(1, 0)
        h.add(EventType.DEAD_LETTERED, {"error": error("no", retryable=False), "reason": "x"})
    elif kind == "running":
        h.claim(1, rng.randint(1, 3))
    else:
        raise ValueError(kind)


@dataclass
class Scenario:
    docs: list[Doc] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)

    def new_task(
        self,
        rng: random.Random,
        *,
        kind: str | None = None,
        parent: str | None = None,
        policy: str = "collect_all",
        threshold: float | None = None,
    ) -> History:
        task_id = f"t{len(self.docs):05d}-{rng.getrandbits(32):08x}"
        new = NewTask(
            user_id="alice",
            task_type="diag.fanout" if kind == "parent" else "diag.noop",
            parameters={},
            parent_task_id=parent,
            root_task_id=parent,
            subtask_policy=policy,
            task_id=task_id,
        )
        doc, entry = new_task_document(new, T0)
        submitted = entry.event
        if threshold is not None:  # carried in the submitted data (see parent_policy)
            data = {**submitted.data, "failure_threshold": threshold}
            submitted = submitted.model_copy(update={"data": data})
        self.docs.append(doc)
        history = History(task_id, submitted)
        self.histories[task_id] = history
        if kind is not None and kind != "parent":
            play(history, kind, rng)
        return history

    @property
    def events(self) -> list[TaskEvent]:
        return [e for h in self.histories.values() for e in h.events]

    def expected(self) -> dict[str, Task]:
        states = {t: fold(h.events) for t, h in self.histories.items()}
        return {t: s for t, s in states.items() if s is not None}

    async def insert(self, store: Store) -> None:
        """Insert the documents, with ``seq`` past every sequence their producers used."""
        for doc in self.docs:
            history = self.histories[doc["_id"]]
            doc["seq"] = max(e.sequence for e in history.events) + 1000
        await store.tasks.insert_many(self.docs)


def mixed_scenario(rng: random.Random, tasks: int) -> Scenario:
    scenario = Scenario()
    for _ in range(tasks):
        scenario.new_task(rng, kind=rng.choice(KINDS))
    return scenario


def chaotic(
    events: list[TaskEvent], rng: random.Random, *, duplicates: float = 0.3
) -> list[TaskEvent]:
    """The events shuffled, a share of them twice, and some progress moved to the very end."""
    stream = list(events) + [e for e in events if rng.random() < duplicates]
    rng.shuffle(stream)
    late = [e for e in stream if e.type is EventType.PROGRESS and rng.random() < 0.2]
    return [e for e in stream if e not in late] + late


def in_messages(events: list[TaskEvent], rng: random.Random, most: int = 6) -> list[EventBatch]:
    """Pack events into messages of 1..most events, as producers' emitters batch them."""
    batches: list[EventBatch] = []
    i = 0
    while i < len(events):
        n = rng.randint(1, most)
        batches.append(EventBatch(events=events[i : i + n]))
        i += n
    return batches


async def publish(publisher: Publisher, batches: list[EventBatch]) -> None:
    for start in range(0, len(batches), 200):
        chunk = batches[start : start + 200]
        await _publish_chunk(publisher, chunk)


async def _publish_chunk(publisher: Publisher, chunk: list[EventBatch]) -> None:
    await asyncio.gather(
        *(
            publisher.publish(
                INTERNAL_EVENTS_EXCHANGE,
                "task.batch",
                amqp_message(b.model_dump_json().encode()),
            )
            for b in chunk
        )
    )


def by_task(events: list[TaskEvent]) -> dict[str, list[TaskEvent]]:
    grouped: dict[str, list[TaskEvent]] = defaultdict(list)
    for e in events:
        grouped[e.task_id].append(e)
    return grouped
