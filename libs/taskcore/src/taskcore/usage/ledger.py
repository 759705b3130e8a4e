"""The usage ledger: one row per provider call, derived from its ``task.usage_recorded``
event and keyed by the event's id, so recording it again (a redelivery, a retried batch,
``taskcore rebuild``) changes nothing.

The log is the truth; the ledger is an index of it for cheap grouping: ``GET /v1/usage``
is one ``$group`` over the rows of a time range. Rows outlive the tasks they came from
(retention removes tasks and their logs, not what was spent).

Grouping by several fields needs a compound ``$group`` key, which the nx-27017 stand-in
does not evaluate (it keeps ``{"user": "$user_id"}`` literally). So each row also holds
its group values JSON-encoded under ``keys``, and a group key is those joined by commas:
``"[" + key + "]"`` parses back into the values, whatever characters they contain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from taskcore.domain.clock import to_ms
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.usage import UsageRecorded

Doc = dict[str, Any]
GroupField = Literal["user", "team", "task_type", "provider", "day"]
GROUP_FIELDS: tuple[GroupField, ...] = ("user", "team", "task_type", "provider", "day")
DUPLICATE_KEY = 11000
_SUMMED = ("prompt_tokens", "completion_tokens", "calls", "cost_nanos")

INDEXES = [
    IndexModel([("at_ms", ASCENDING)]),
    IndexModel([("user_id", ASCENDING), ("at_ms", ASCENDING)]),
    IndexModel([("team_id", ASCENDING), ("at_ms", ASCENDING)]),
]


def ledger_row(event: TaskEvent) -> Doc | None:
    """The row of a usage event; None for any other event (or a malformed one)."""
    if event.type is not EventType.USAGE_RECORDED:
        return None
    call = UsageRecorded.parse(event.data)
    if call is None:
        return None
    day = event.occurred_at.date().isoformat()
    values: dict[GroupField, str | None] = {
        "user": call.user_id,
        "team": call.team_id,
        "task_type": call.task_type,
        "provider": call.provider,
        "day": day,
    }
    return {
        "_id": event.event_id,
        "task_id": event.task_id,
        "at_ms": to_ms(event.occurred_at),
        "day": day,
        "user_id": call.user_id,
        "team_id": call.team_id,
        "task_type": call.task_type,
        "provider": call.provider,
        "model": call.model,
        "tier": call.tier,
        "currency": call.currency,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "tokens": call.prompt_tokens + call.completion_tokens,
        "calls": 1,
        "cost_nanos": call.cost_nanos,
        "keys": {name: json.dumps(value) for name, value in values.items()},
    }


def ledger_rows(events: Iterable[TaskEvent]) -> list[Doc]:
    return [row for row in map(ledger_row, events) if row is not None]


async def record(ledger: AsyncCollection[Doc], events: Iterable[TaskEvent]) -> int:
    """Add the rows of these events that are not in the ledger yet; how many were new."""
    rows = ledger_rows(events)
    if not rows:
        return 0
    try:
        await ledger.insert_many(rows, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return len(rows) - len(errors)
    return len(rows)


async def restore(ledger: AsyncCollection[Doc], events: Iterable[TaskEvent], *, check: bool) -> int:
    """Make the rows of these events what the events say (``taskcore rebuild``); how many
    were missing or different. With ``check`` nothing is written."""
    rows = {row["_id"]: row for row in ledger_rows(events)}
    if not rows:
        return 0
    stored = {d["_id"]: d async for d in ledger.find({"_id": {"$in": list(rows)}})}
    wrong = [row for row_id, row in rows.items() if stored.get(row_id) != row]
    if wrong and not check:
        for row in wrong:
            await ledger.replace_one({"_id": row["_id"]}, row, upsert=True)
    return len(wrong)


# ---- reports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    """Which rows (``scope``, a filter the caller may see) between two instants (from
    inclusive, to exclusive), grouped by which fields."""

    start: datetime
    end: datetime
    group_by: Sequence[GroupField]
    scope: Doc = field(default_factory=dict)


@dataclass(frozen=True)
class UsageGroup:
    group: dict[str, str | None]
    prompt_tokens: int
    completion_tokens: int
    calls: int
    cost_nanos: int


MAX_GROUPS = 10_000


def report_pipeline(query: UsageQuery) -> list[Doc]:
    match: Doc = {**query.scope, "at_ms": {"$gte": to_ms(query.start), "$lt": to_ms(query.end)}}
    key: Any = ""
    if query.group_by:
        parts: list[str] = []
        for name in query.group_by:
            parts += [",", f"$keys.{name}"]
        key = {"$concat": parts[1:]}
    sums = {name: {"$sum": f"${name}"} for name in _SUMMED}
    # One more than allowed: enough to tell that there are too many.
    return [{"$match": match}, {"$group": {"_id": key, **sums}}, {"$limit": MAX_GROUPS + 1}]


class TooManyGroups(ValueError):
    """A report would hold more than ``MAX_GROUPS`` groups."""


async def report(ledger: AsyncCollection[Doc], query: UsageQuery) -> list[UsageGroup]:
    """The rows' sums per group, ordered by the group's values; ``TooManyGroups`` past
    ``MAX_GROUPS`` (one answer is built in memory: its size is bounded here)."""
    rows = await (await ledger.aggregate(report_pipeline(query))).to_list(None)
    if len(rows) > MAX_GROUPS:
        raise TooManyGroups(f"more than {MAX_GROUPS} groups")
    groups = []
    for row in rows:
        values = json.loads(f"[{row['_id']}]") if query.group_by else []
        groups.append(
            UsageGroup(
                group=dict(zip(query.group_by, values, strict=True)),
                **{name: int(row.get(name) or 0) for name in _SUMMED},
            )
        )
    return sorted(groups, key=lambda g: [(v is not None, v or "") for v in g.group.values()])
