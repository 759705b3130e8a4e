"""What must hold after any fault, checked the same way after every run.

After a run has settled (``settle``):
- every task is terminal, in the status its kind must end in, and the store holds exactly
  the run's tasks (each fan-out exactly its children);
- the event log has exactly one terminal event per task, at most one ``task.completed``,
  and exactly one when the task succeeded;
- the projections are what ``taskcore rebuild --check`` computes from the log;
- ``dead_letters`` holds exactly the expected records;
- the subscriber, deduplicating by CloudEvent id, got each task's terminal event once;
- no outbox holds an undelivered message;
- no delayed or scheduled task started before its ``scheduled_for``, and the schedule
  made at most one task per due time, each at one of its due times.

``check`` returns every violation as a sentence rather than stopping at the first, so a
failing run says everything that went wrong.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudevents.core.v1.event import CloudEvent
from taskcore.adapters.mongo import Doc, Store
from taskcore.testing.broker_control import queue_depths

TERMINAL_EVENT = {
    "COMPLETED": "task.completed",
    "COMPLETED_WITH_ERRORS": "task.completed_with_errors",
    "FAILED": "task.failed",
    "CANCELLED": "task.cancelled",
    "DEAD_LETTER": "task.dead_lettered",
}
TERMINAL_EVENT_TYPES = frozenset(TERMINAL_EVENT.values())


@dataclass(frozen=True)
class Expected:
    """What a run must end with."""

    statuses: Mapping[str, str]  # every task id -> its terminal status
    children: Mapping[str, int]  # fan-out parent id -> how many children it must have
    dead_letter_ids: frozenset[str]


@dataclass(frozen=True)
class Observed:
    """The state of a run, read once."""

    tasks: dict[str, Doc]
    events: dict[str, list[Doc]]  # task id -> its logged events, in sequence order
    dead_letters: dict[str, Doc]


async def observe(store: Store) -> Observed:
    tasks = {d["_id"]: d async for d in store.tasks.find({})}
    events: dict[str, list[Doc]] = defaultdict(list)
    async for e in store.events.find({}).sort([("task_id", 1), ("sequence", 1)]):
        events[e["task_id"]].append(e)
    dead = {d["_id"]: d async for d in store.dead_letters.find({})}
    return Observed(tasks, dict(events), dead)


def terminal_events(observed: Observed) -> dict[str, list[Doc]]:
    return {
        task_id: [e for e in events if e["type"] in TERMINAL_EVENT_TYPES]
        for task_id, events in observed.events.items()
    }


def received_terminal(received: Iterable[CloudEvent]) -> dict[str, set[str]]:
    """Task id -> the ids of the terminal CloudEvents received (deduplicated by id)."""
    unique = {str(e.get_id()): e for e in received}
    out: dict[str, set[str]] = defaultdict(set)
    for event_id, e in unique.items():
        if "task." + str(e.get_type()).removeprefix("io.taskcore.task.") in TERMINAL_EVENT_TYPES:
            out[str(e.get_subject())].add(event_id)
    return out


# -- settling -------------------------------------------------------------------------


async def pending(store: Store, vhost: str, received: list[CloudEvent], total: int) -> str:
    """What the run is still waiting for; empty once it has settled."""
    observed = await observe(store)
    open_tasks = [i for i, d in observed.tasks.items() if d.get("status") not in TERMINAL_EVENT]
    if len(observed.tasks) < total or open_tasks:
        return f"{len(observed.tasks)} of {total} tasks exist, {len(open_tasks)} not terminal"
    depths = {q: n for q, n in (await asyncio.to_thread(queue_depths, vhost)).items() if n}
    if depths:
        return f"queues not drained: {depths}"
    outboxes = [i for i, d in observed.tasks.items() if d.get("outbox")]
    if outboxes:
        return f"{len(outboxes)} outboxes not drained, e.g. {outboxes[:3]}"
    got = received_terminal(received)
    missing = [
        e["_id"]
        for task_id, events in terminal_events(observed).items()
        for e in events
        if e["_id"] not in got[task_id]
    ]
    return f"{len(missing)} terminal events not received, e.g. {missing[:3]}" if missing else ""


async def settle(
    store: Store, vhost: str, received: list[CloudEvent], total: int, *, within: float
) -> str:
    """Wait until nothing is in flight any more; returns '' or what was still pending when
    ``within`` seconds ran out (the checks then say what is wrong)."""
    deadline = time.monotonic() + within
    while True:
        left = await pending(store, vhost, received, total)
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.3)  # polling the run's state, bounded by the deadline


# -- the checks -----------------------------------------------------------------------


def some(what: str, found: Sequence[object]) -> list[str]:
    """One sentence for a kind of violation: how many, and the first few."""
    return [f"{len(found)} {what}, e.g. {list(found[:3])}"] if found else []


def check_tasks(observed: Observed, expected: Expected) -> list[str]:
    children = Counter(d.get("parent_task_id") for d in observed.tasks.values())
    return [
        *some("expected tasks are missing", sorted(set(expected.statuses) - set(observed.tasks))),
        *some("tasks nobody submitted", sorted(set(observed.tasks) - set(expected.statuses))),
        *some(
            "fan-outs without exactly their children (parent, children, expected)",
            [(p, children[p], n) for p, n in expected.children.items() if children[p] != n],
        ),
        *some(
            "tasks not in the status they must end in (task, status, expected)",
            [
                (task_id, observed.tasks[task_id].get("status"), status)
                for task_id, status in expected.statuses.items()
                if task_id in observed.tasks and observed.tasks[task_id].get("status") != status
            ],
        ),
    ]


def check_log(observed: Observed) -> list[str]:
    terminals = terminal_events(observed)
    doubled, missing, mismatched = [], [], []
    for task_id, doc in observed.tasks.items():
        status = doc.get("status", "")
        types = [e["type"] for e in terminals.get(task_id, [])]
        completions = types.count("task.completed")
        if completions > 1:
            doubled.append((task_id, completions))
        elif completions != int(status == "COMPLETED"):
            missing.append((task_id, status))
        if types != [TERMINAL_EVENT.get(status, "?")]:
            mismatched.append((task_id, status, types))
    return [
        *some("tasks completed more than once (task, task.completed events)", doubled),
        *some("COMPLETED tasks without their task.completed (task, status)", missing),
        *some("tasks without exactly one terminal event (task, status, events)", mismatched),
    ]


def check_dead_letters(observed: Observed, expected: Expected) -> list[str]:
    extra = sorted(set(observed.dead_letters) - expected.dead_letter_ids)
    unparked = [
        (task_id, e["data"]["dead_letter_id"])
        for task_id, events in terminal_events(observed).items()
        for e in events
        if e["type"] == "task.dead_lettered"
        and e.get("data", {}).get("dead_letter_id") not in (None, *observed.dead_letters)
    ]
    return [
        *some(
            "unexpected dead letters (id, reason)",
            [(i, observed.dead_letters[i].get("reason")) for i in extra],
        ),
        *some(
            "expected dead letters are missing",
            sorted(expected.dead_letter_ids - set(observed.dead_letters)),
        ),
        *some("dead-lettered tasks whose dead letter was not parked (task, id)", unparked),
    ]


def check_received(observed: Observed, received: list[CloudEvent], errors: list[str]) -> list[str]:
    got = received_terminal(received)
    differing = [
        (task_id, sorted(e["_id"] for e in events), sorted(got.get(task_id, set())))
        for task_id, events in terminal_events(observed).items()
        if got.get(task_id, set()) != {e["_id"] for e in events}
    ]
    return [
        *some("unreadable CloudEvents", errors),
        *some(
            "tasks whose terminal CloudEvents differ from the log (task, logged, got)", differing
        ),
        *some("terminal CloudEvents for unknown tasks", sorted(set(got) - set(observed.tasks))),
    ]


def check_outboxes(observed: Observed) -> list[str]:
    stuck = {i: sorted(d["outbox"]) for i, d in observed.tasks.items() if d.get("outbox")}
    if not stuck:
        return []
    return [f"{len(stuck)} outboxes still hold messages: {list(stuck.items())[:3]}"]


def rebuild_check(mongo_url: str, db: str) -> list[str]:
    """``taskcore rebuild --check``: the projections equal the fold of the log."""
    env = {**os.environ, "MONGO_URL": mongo_url, "MONGO_DB": db}
    done = subprocess.run(
        [sys.executable, "-m", "taskcore.cli", "rebuild", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 0:
        return []
    return [f"taskcore rebuild --check exited {done.returncode}: {done.stdout}{done.stderr}"]


def check_time(observed: Observed, schedule_id: str | None) -> list[str]:
    early = []
    for task_id, doc in observed.tasks.items():
        if doc.get("scheduled_for") is None:
            continue
        due = _utc(doc["scheduled_for"])
        log = observed.events.get(task_id, [])
        starts = [_utc(e["occurred_at"]) for e in log if e["type"] == "task.started"]
        if starts and min(starts) < due:
            early.append((task_id, due.isoformat(), min(starts).isoformat()))
    runs = [
        _utc(d["scheduled_for"])
        for d in observed.tasks.values()
        if schedule_id is not None and d.get("schedule_id") == schedule_id
    ]
    doubled = sorted(at.isoformat() for at, n in Counter(runs).items() if n > 1)
    off = sorted(at.isoformat() for at in runs if at.second % 2 or at.microsecond)
    return [
        *some("tasks started before their time (task, due, started)", early),
        *some("due times of the schedule with more than one task", doubled),
        *some("schedule runs at times that are not its due times", off),
    ]


def _utc(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def check(
    store: Store,
    expected: Expected,
    received: list[CloudEvent],
    errors: list[str],
    *,
    mongo_url: str,
    schedule_id: str | None = None,
) -> list[str]:
    """Every violated post-condition, as a sentence (an empty list: all hold)."""
    observed = await observe(store)
    return [
        *check_tasks(observed, expected),
        *check_log(observed),
        *check_dead_letters(observed, expected),
        *check_received(observed, received, errors),
        *check_outboxes(observed),
        *check_time(observed, schedule_id),
        *await asyncio.to_thread(rebuild_check, mongo_url, store.db.name),
    ]
