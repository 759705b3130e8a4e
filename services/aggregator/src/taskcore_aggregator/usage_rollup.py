"""A parent's ``descendant_usage``: the provider calls of every task below it, derived from
its children like the subtask counters (``parents``), and so right whatever was
redelivered or replayed.

A child's total is its own usage (folded from its log) plus its own descendants'. A
roll-up sums the totals of a parent's children and stores the sum conditionally on the
parent's recount mark, as counts are stored: a roll-up that read an older mark never
overwrites one that read a newer mark (``TaskDocuments.roll_up_usage``).

A change climbs: when a parent's sum changes, its own parent is marked for a recount
first (so a crash here leaves a stamp the watchdog picks up) and rolled up at once, and
so on up to the root (trees are at most a few levels deep).
"""

from __future__ import annotations

from collections.abc import Iterable

from taskcore.adapters.mongo import Doc, Store
from taskcore.domain.usage import Usage, combined
from taskcore.taskdoc import STATE_FIELDS, WITHOUT_OUTBOX, ExecState

# Deeper than any tree the API accepts (TASKCORE_MAX_DEPTH), so a climb always ends.
MAX_LEVELS = 64
_USAGE_FIELDS = {"own_usage": 1, "descendant_usage": 1}


def _usage(raw: object) -> Usage | None:
    return Usage.model_validate(raw) if isinstance(raw, dict) else None


def total_of(doc: Doc) -> Usage | None:
    """A task's usage with its descendants', from its stored document."""
    return combined(_usage(doc.get("own_usage")), _usage(doc.get("descendant_usage")))


async def children_usage(store: Store, parent_id: str) -> Usage | None:
    """The sum of the children's totals; None if no child has used a provider.

    Two queries on the ``parent_task_id`` index, each returning only children that
    used something (a fan-out of 10,000 tasks that call no provider costs no transfer).
    """
    seen: dict[str, Doc] = {}
    for field in _USAGE_FIELDS:
        query = {"parent_task_id": parent_id, f"{field}.calls": {"$gte": 1}}
        async for doc in store.tasks.find(query, _USAGE_FIELDS):
            seen[doc["_id"]] = doc
    return combined(*(total_of(doc) for doc in seen.values()))


async def roll_up_usage(store: Store, doc: Doc) -> None:
    """Store the usage of the parent ``doc`` holds (as read before its recount) and carry
    a change up to its ancestors."""
    current: Doc | None = doc
    for _ in range(MAX_LEVELS):
        if current is None or not await _roll_up_one(store, current):
            return
        grandparent = current.get("parent_task_id")
        if not grandparent:
            return
        await store.documents.mark_for_recount([grandparent])
        current = await store.documents.get(grandparent, WITHOUT_OUTBOX)


async def _roll_up_one(store: Store, doc: Doc) -> bool:
    """Whether the parent's stored descendant usage changed."""
    usage = await children_usage(store, doc["_id"])
    if usage == _usage(doc.get("descendant_usage")):
        return False
    value = usage.model_dump() if usage is not None else None
    mark = ExecState.of(doc).subtasks_marked
    return await store.documents.roll_up_usage(doc["_id"], value, mark)


# ---- taskcore rebuild --------------------------------------------------------------------


async def rebuild_usage(store: Store, parent_ids: Iterable[str], *, check: bool) -> list[str]:
    """Recompute the descendant usage of these parents (and of their ancestors, when it
    changes) from their children's stored documents, deepest first by recursion; the ids
    whose stored value differed. With ``check`` nothing is written."""
    totals: dict[str, Usage | None] = {}
    differing: list[str] = []
    pending = sorted(set(parent_ids))
    done: set[str] = set()
    while pending:
        parent_id = pending.pop()
        if parent_id in done:
            continue
        done.add(parent_id)
        doc = await store.documents.get(parent_id, {"parent_task_id": 1, **_USAGE_FIELDS})
        if doc is None:
            continue
        usage = await _descendants(store, parent_id, totals)
        if usage == _usage(doc.get("descendant_usage")):
            continue
        differing.append(parent_id)
        if not check:
            await store.documents.store_rebuilt_usage(
                parent_id, usage.model_dump() if usage is not None else None
            )
        if doc.get("parent_task_id"):
            pending.append(doc["parent_task_id"])
    return differing


async def _descendants(
    store: Store, parent_id: str, memo: dict[str, Usage | None], depth: int = 0
) -> Usage | None:
    """The usage of everything below ``parent_id``, from the children's own usage."""
    if parent_id in memo:
        return memo[parent_id]
    fields = {"own_usage": 1, **STATE_FIELDS}
    parts: list[Usage | None] = []
    async for child in store.tasks.find({"parent_task_id": parent_id}, fields):
        parts.append(_usage(child.get("own_usage")))
        if ExecState.of(child).has_children and depth < MAX_LEVELS:
            parts.append(await _descendants(store, child["_id"], memo, depth + 1))
    memo[parent_id] = combined(*parts)
    return memo[parent_id]
