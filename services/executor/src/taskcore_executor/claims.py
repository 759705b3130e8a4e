"""The executor's store operations: claim, heartbeat, reserve sequences, finish.

All are single-document conditional updates on the task document's ``exec`` fields
(see docs/design.md, "Claims, leases, redelivery").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from taskcore.adapters.mongo import EPOCH_MS, Doc, Store, now_ms
from taskcore.outbox import OutboxEntry, outbox_fields

SEQUENCE_BLOCK = 1000


@dataclass(frozen=True)
class Claim:
    task_id: str
    dispatch: int
    attempt: int  # executions over the task's whole life, this one included
    first_sequence: int  # the block reserved for this claim: first..last
    last_sequence: int
    doc: Doc


class ClaimRefused(Exception):
    def __init__(self, reason: str, doc: Doc | None, lease_left_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.doc = doc
        self.lease_left_s = lease_left_s


# A claim reads the task document back for its bookkeeping, never for its outbox: the
# submission's entry alone (its message and event) is most of a fresh document's size.
CLAIMED_FIELDS = {"outbox": 0}


def _lease_end(lease_s: float) -> int:
    return now_ms() + int(lease_s * 1000)


async def claim(store: Store, task_id: str, dispatch: int, node: str, lease_s: float) -> Claim:
    now = now_ms()
    doc = await store.tasks.find_one_and_update(
        {
            "_id": task_id,
            "exec.done_no": {"$lt": dispatch},
            "exec.lease_until": {"$lt": now},
            "cancel_requested": False,
        },
        {
            "$set": {
                "exec.claim_no": dispatch,
                "exec.claimed_by": node,
                "exec.lease_until": now + int(lease_s * 1000),
            },
            "$inc": {"seq": SEQUENCE_BLOCK, "exec.attempts": 1},
        },
        CLAIMED_FIELDS,
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        raise await _refusal(store, task_id, dispatch, now)
    last = int(doc["seq"])
    return Claim(
        task_id, dispatch, int(doc["exec"]["attempts"]), last - SEQUENCE_BLOCK + 1, last, doc
    )


async def _refusal(store: Store, task_id: str, dispatch: int, now: int) -> ClaimRefused:
    doc = await store.tasks.find_one({"_id": task_id})
    if doc is None:
        return ClaimRefused("unknown_task", None)
    ex = doc.get("exec") or {}
    if int(ex.get("done_no", -1)) >= dispatch:
        return ClaimRefused("already_done", doc)
    lease_left_s = max(0.0, (int(ex.get("lease_until") or EPOCH_MS) - now) / 1000)
    if lease_left_s > 0:
        # Checked before the cancel flag: a holder that is alive records the cancel itself,
        # and if it died the task must be looked at again once its lease has expired.
        return ClaimRefused("running_elsewhere", doc, lease_left_s)
    if doc.get("cancel_requested"):
        return ClaimRefused("cancel_requested", doc)
    # The lease expired between the claim and this read: claiming again may succeed.
    return ClaimRefused("running_elsewhere", doc, 0.0)


async def reserve_sequences(store: Store, task_id: str, count: int = SEQUENCE_BLOCK) -> int:
    """Reserve ``count`` more sequences; returns the first."""
    doc = await store.tasks.find_one_and_update(
        {"_id": task_id},
        {"$inc": {"seq": count}},
        {"seq": 1},
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None
    return int(doc["seq"]) - count + 1


async def extend_leases(store: Store, task_ids: list[str], node: str, lease_s: float) -> None:
    if task_ids:
        await store.tasks.update_many(
            {"_id": {"$in": task_ids}, "exec.claimed_by": node},
            {"$set": {"exec.lease_until": _lease_end(lease_s)}},
        )


@dataclass(frozen=True)
class ClaimState:
    """What the heartbeat needs to know about a running task's document."""

    claimed_by: str | None
    claim_no: int
    cancel_requested: bool


async def claim_states(store: Store, task_ids: list[str]) -> dict[str, ClaimState]:
    if not task_ids:
        return {}
    # Whole ``exec``: the stand-in answers a dotted projection with flat "exec.x" keys.
    cursor = store.tasks.find({"_id": {"$in": task_ids}}, {"exec": 1, "cancel_requested": 1})
    return {
        d["_id"]: ClaimState(
            (d.get("exec") or {}).get("claimed_by"),
            int((d.get("exec") or {}).get("claim_no", 0)),
            bool(d.get("cancel_requested")),
        )
        async for d in cursor
    }


async def release(store: Store, task_id: str, dispatch: int, node: str) -> None:
    """Give a claim back unfinished, so the redelivered message is claimed at once."""
    await store.tasks.update_one(
        {"_id": task_id, "exec.claimed_by": node, "exec.claim_no": dispatch},
        {"$set": {"exec.lease_until": EPOCH_MS, "exec.claimed_by": None}},
    )


async def finish(
    store: Store, claim: Claim, node: str, entries: list[OutboxEntry], extra: Doc | None = None
) -> bool:
    """Record the claim's outcome and its outbox entries; False if the lease was lost."""
    fields: dict[str, Any] = {
        "exec.done_no": claim.dispatch,
        "exec.lease_until": EPOCH_MS,
        "exec.claimed_by": None,
        **outbox_fields(entries),
        **(extra or {}),
    }
    result = await store.tasks.update_one(
        {"_id": claim.task_id, "exec.claimed_by": node, "exec.claim_no": claim.dispatch},
        {"$set": fields},
    )
    return result.matched_count == 1


async def record_cancelled(store: Store, task_id: str, dispatch: int, entry: OutboxEntry) -> bool:
    """A queued task whose cancel was requested: close it without running."""
    result = await store.tasks.update_one(
        {
            "_id": task_id,
            "cancel_requested": True,
            "exec.done_no": {"$lt": dispatch},
            "exec.lease_until": {"$lt": now_ms()},
        },
        {"$set": {"exec.done_no": dispatch, "exec.open": False, **outbox_fields([entry])}},
    )
    return result.matched_count == 1
