"""The store side of the task-document protocol: ``TaskDocuments`` sends the operations
of ``taskcore.taskdoc.operations`` to MongoDB, and is the only code that writes a task
document's bookkeeping (services import this, never write such filters themselves)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.messages.envelope import OutboxEntry
from taskcore.taskdoc import operations as ops
from taskcore.taskdoc import state as f
from taskcore.taskdoc.operations import SEQUENCE_BLOCK, Ending, Op, Refusal
from taskcore.taskdoc.state import STATE_FIELDS, WITHOUT_OUTBOX, Doc, ExecState

DUPLICATE_KEY = 11000


def now_ms() -> int:
    """Epoch milliseconds: leases and outbox clocks are integers (docs/design.md, "Times
    in the store")."""
    return time.time_ns() // 1_000_000


# A claim reads the task back for what to run and its bookkeeping, never for its outbox.
CLAIMED_FIELDS = WITHOUT_OUTBOX


@dataclass(frozen=True)
class Claim:
    """A claimed dispatch: the document as claimed (what to run) and its sequence block."""

    task_id: str
    dispatch: int
    attempt: int  # executions over the task's whole life, this one included
    first_sequence: int  # the block reserved for this claim: first..last
    last_sequence: int
    doc: Doc
    took_over: bool = False  # from a holder whose lease expired (a stalled attempt)

    @property
    def state(self) -> ExecState:
        return ExecState.of(self.doc)

    @classmethod
    def of(cls, doc: Doc, dispatch: int, took_over: bool = False) -> Claim:
        last = int(doc[f.SEQ])
        attempt = ExecState.of(doc).attempts
        return cls(doc["_id"], dispatch, attempt, last - SEQUENCE_BLOCK + 1, last, doc, took_over)


class ClaimRefused(Exception):
    def __init__(self, reason: Refusal, doc: Doc | None, lease_left_s: float = 0.0) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.doc = doc
        self.lease_left_s = lease_left_s


@dataclass(frozen=True)
class Finish:
    """One outcome to record (``finish_many`` takes several)."""

    claim: Claim
    ending: Ending
    entries: list[OutboxEntry]
    retry_count: int | None = None


@dataclass
class Inserted:
    """What an insert of new documents did not do."""

    duplicates: set[str] = field(default_factory=set)  # ids already taken: the same task
    failed: dict[str, str] = field(default_factory=dict)  # ids refused, and the reason


def _on_id(error: Doc) -> bool:
    """Whether a duplicate-key error is on ``_id`` (the task exists) rather than another
    unique index (the document was refused). MongoDB says so in ``keyPattern``; the
    stand-in only in its message."""
    pattern = error.get("keyPattern")
    if isinstance(pattern, dict):
        return list(pattern) == ["_id"]
    message = str(error.get("errmsg") or "")
    return "_id_" in message or "._id" in message


class TaskDocuments:
    def __init__(self, collection: AsyncCollection[Doc], clock: Callable[[], int] = now_ms) -> None:
        self.collection = collection
        self.clock = clock

    # ---- plumbing ------------------------------------------------------------------

    async def apply(self, op: Op) -> bool:
        """Send one operation; whether its precondition held."""
        result = await self.collection.update_one(op.filter, op.update)
        return result.matched_count == 1

    async def apply_returning(
        self, op: Op, fields: Doc | None = None, *, before: bool = False
    ) -> Doc | None:
        """Send one operation; the document after it (or before), None if it did not match."""
        return await self.collection.find_one_and_update(
            op.filter,
            op.update,
            fields,
            return_document=ReturnDocument.BEFORE if before else ReturnDocument.AFTER,
        )

    async def get(self, task_id: str, fields: Doc | None = None) -> Doc | None:
        return await self.collection.find_one({"_id": task_id}, fields)

    async def get_many(self, task_ids: Sequence[str], fields: Doc | None = None) -> dict[str, Doc]:
        if not task_ids:
            return {}
        cursor = self.collection.find({"_id": {"$in": list(task_ids)}}, fields)
        return {d["_id"]: d async for d in cursor}

    # ---- creating ------------------------------------------------------------------

    async def insert_new(self, docs: list[Doc]) -> Inserted:
        """Insert new task documents, each on its own: which already existed (the same
        id: an idempotent repeat) and which the store refused, and why."""
        try:
            await self.collection.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            inserted = Inserted()
            for err in exc.details.get("writeErrors", []):
                task_id = docs[err["index"]]["_id"]
                if err.get("code") == DUPLICATE_KEY and _on_id(err):
                    inserted.duplicates.add(task_id)
                else:
                    inserted.failed[task_id] = str(err.get("errmsg") or "refused")[:500]
            if not exc.details.get("writeErrors"):
                raise
            return inserted
        return Inserted()

    async def reserve_event(
        self,
        task_id: str,
        type_: EventType,
        data: dict[str, Any],
        *,
        traceparent: str | None = None,
    ) -> TaskEvent:
        """An event at a freshly reserved sequence of the task (one that ends up unused
        leaves a gap, which the fold allows). KeyError if there is no such task."""
        sequence = await self.reserve_sequences(task_id, 1)
        return TaskEvent(
            event_id=event_id_for(task_id, sequence),
            task_id=task_id,
            sequence=sequence,
            type=type_,
            occurred_at=datetime.now(UTC),
            data=data,
            traceparent=traceparent,
        )

    async def reserve_sequences(self, task_id: str, count: int = 1) -> int:
        """Reserve ``count`` sequences; returns the first. KeyError if there is no task."""
        doc = await self.apply_returning(ops.reserve_sequences(task_id, count), {f.SEQ: 1})
        if doc is None:
            raise KeyError(task_id)
        return int(doc[f.SEQ]) - count + 1

    # ---- claims --------------------------------------------------------------------

    def _lease_until(self, lease_s: float) -> int:
        return self.clock() + int(lease_s * 1000)

    async def claim(self, task_id: str, dispatch: int, node: str, lease_s: float) -> Claim:
        """Claim ``dispatch`` of a task, taking over from a stalled holder if need be;
        ``ClaimRefused`` says why not."""
        op = ops.claim(task_id, dispatch, node, lease_until=self._lease_until(lease_s), token=None)
        doc = await self.apply_returning(op, CLAIMED_FIELDS)
        if doc is not None:
            return Claim.of(doc, dispatch)
        current = await self.get(task_id, CLAIMED_FIELDS)
        now = self.clock()
        reason = ops.refusal(current, dispatch, now)
        if reason is Refusal.STALLED:
            take = ops.take_over(
                task_id, dispatch, node, now_ms=now, lease_until=self._lease_until(lease_s)
            )
            doc = await self.apply_returning(take, CLAIMED_FIELDS)
            if doc is not None:
                return Claim.of(doc, dispatch, took_over=True)
            reason = Refusal.RUNNING_ELSEWHERE  # someone else took it over first
        lease_left_s = 0.0
        if current is not None:
            lease_left_s = max(0.0, (ExecState.of(current).lease_until - now) / 1000)
        raise ClaimRefused(reason, current, lease_left_s)

    async def claim_many(
        self, task_ids: list[str], dispatch: int, node: str, lease_s: float
    ) -> list[Claim]:
        """Claim the same dispatch of several tasks in two round trips; the tasks that
        could not be claimed are simply absent (``claim`` tells why, one at a time)."""
        token = uuid.uuid4().hex
        op = ops.claim(
            task_ids, dispatch, node, lease_until=self._lease_until(lease_s), token=token
        )
        await self.collection.update_many(op.filter, op.update)
        # By _id first: the token has no index, and a scan of every task grows with the
        # collection (346 ms at 40k tasks on the stand-in, against 4 ms this way).
        query = {"_id": {"$in": task_ids}, f.CLAIM_TOKEN: token}
        docs = await self.collection.find(query, CLAIMED_FIELDS).to_list(None)
        return [Claim.of(doc, dispatch) for doc in docs]

    async def extend_leases(self, task_ids: list[str], node: str, lease_s: float) -> None:
        if task_ids:
            op = ops.extend_leases(task_ids, node, self._lease_until(lease_s))
            await self.collection.update_many(op.filter, op.update)

    async def states(self, task_ids: list[str]) -> dict[str, ExecState]:
        docs = await self.get_many(task_ids, STATE_FIELDS)
        return {task_id: ExecState.of(doc) for task_id, doc in docs.items()}

    async def release(self, task_id: str, dispatch: int, node: str) -> bool:
        return await self.apply(ops.release(task_id, dispatch, node))

    async def finish_many(self, node: str, finishes: list[Finish]) -> list[bool]:
        """Record several claims' outcomes in one round trip; each says whether it landed
        (False: that claim was lost, and its outcome must be dropped)."""
        tokens = [uuid.uuid4().hex for _ in finishes]
        now = self.clock()
        writes = [
            ops.finish(
                x.claim.task_id,
                x.claim.dispatch,
                node,
                x.ending,
                x.entries,
                now_ms=now,
                token=token,
                retry_count=x.retry_count,
            )
            for x, token in zip(finishes, tokens, strict=True)
        ]
        result = await self.collection.bulk_write(
            [UpdateOne(w.filter, w.update) for w in writes], ordered=False
        )
        if result.matched_count == len(writes):
            return [True] * len(writes)
        # Some lost their claim: each one's own token says whether its update landed.
        docs = await self.get_many([x.claim.task_id for x in finishes], {"exec": 1})
        return [
            (docs.get(x.claim.task_id) or {}).get("exec", {}).get("finish_token") == token
            for x, token in zip(finishes, tokens, strict=True)
        ]

    # ---- cancellation --------------------------------------------------------------

    async def cancel_if_idle(self, task_id: str, entry: OutboxEntry, *, parent: bool) -> bool:
        now = self.clock()
        return await self.apply(ops.cancel_if_idle(task_id, entry, parent=parent, now_ms=now))

    async def reserve_descendants(self, root_id: str, count: int, limit: int) -> bool:
        """Whether ``count`` more tasks fit under the root (and are now counted)."""
        return await self.apply(ops.reserve_descendants(root_id, count, limit))

    async def write_workflow_view(self, task_id: str, shown: Doc, *, closed: bool) -> bool:
        return await self.apply(ops.write_workflow_view(task_id, shown, closed=closed))

    async def mark_parent(self, task_id: str) -> None:
        await self.apply(ops.mark_parent(task_id))

    async def request_cancel(self, task_id: str, entry: OutboxEntry) -> ExecState | None:
        """Flag the task; its state before the flag, or None if it was already flagged or
        is finished."""
        op = ops.request_cancel(task_id, entry, now_ms=self.clock())
        before = await self.apply_returning(op, STATE_FIELDS, before=True)
        return None if before is None else ExecState.of(before)

    async def mark_cascaded(self, task_id: str) -> None:
        await self.apply(ops.mark_cascaded(task_id))

    async def open_children(self, parent_ids: list[str]) -> list[Doc]:
        cursor = self.collection.find(ops.open_children(parent_ids), ops.OPEN_CHILDREN_FIELDS)
        return await cursor.to_list(None)

    # ---- parents -------------------------------------------------------------------

    async def close_parent(self, parent_id: str, counts: Doc, entry: OutboxEntry) -> bool:
        return await self.apply(ops.close_parent(parent_id, counts, entry, now_ms=self.clock()))

    async def mark_for_recount(self, parent_ids: list[str]) -> None:
        if parent_ids:
            op = ops.mark_for_recount(parent_ids, self.clock())
            await self.collection.update_many(op.filter, op.update)

    async def store_counts(self, parent_id: str, counts: Doc, mark: Any, changed: bool) -> None:
        """Store a recount that read ``mark`` (see ``operations.store_counts``)."""
        changed_ms = self.clock() if changed else None
        if not isinstance(mark, int):
            await self.apply(ops.store_counts(parent_id, counts, None, changed_ms=changed_ms))
            return
        if not await self.apply(ops.settle_counts(parent_id, counts, mark, changed_ms=changed_ms)):
            # Newer marks came in: they will be recounted too.
            await self.apply(ops.store_counts(parent_id, counts, mark, changed_ms=changed_ms))

    async def roll_up_usage(self, parent_id: str, usage: Doc | None, mark: Any) -> bool:
        """Store a roll-up of the children's usage that read ``mark`` (see
        ``operations.roll_up_usage``); whether it was stored."""
        if not isinstance(mark, int):
            return await self.apply(ops.roll_up_usage(parent_id, usage, None))
        if await self.apply(ops.roll_up_usage(parent_id, usage, mark)):
            return True
        return await self.apply(ops.first_roll_up_usage(parent_id, usage, mark))

    async def store_rebuilt_usage(self, parent_id: str, usage: Doc | None) -> None:
        await self.apply(ops.rebuilt_usage(parent_id, usage))

    async def stale_recounts(self, older_than_ms: int, limit: int) -> list[str]:
        query = {f.MARKED_AT: {"$lt": older_than_ms}}
        return [d["_id"] async for d in self.collection.find(query, {"_id": 1}).limit(limit)]

    async def awaiting_children(self, limit: int) -> list[Doc]:
        """Parents whose run ended (as folded) and that wait for their children: their
        ``updated_at`` and protocol fields."""
        cursor = self.collection.find(
            {"awaiting_children": True}, {"updated_at": 1, **STATE_FIELDS}
        )
        return await cursor.limit(limit).to_list(None)

    # ---- dead letters --------------------------------------------------------------

    async def reopen_for_replay(
        self,
        task_id: str,
        dispatch: int,
        entry: OutboxEntry,
        *,
        record_id: str,
        parameters: dict[str, Any] | None,
    ) -> bool:
        op = ops.reopen_for_replay(
            task_id,
            dispatch,
            entry,
            record_id=record_id,
            parameters=parameters,
            now_ms=self.clock(),
        )
        return await self.apply(op)

    async def add_to_outbox(self, task_id: str, entry: OutboxEntry) -> bool:
        return await self.apply(ops.add_to_outbox(task_id, entry, now_ms=self.clock()))

    async def mark_discarded(
        self, task_id: str, dispatch: int, record_id: str, entry: OutboxEntry
    ) -> bool:
        op = ops.mark_discarded(task_id, dispatch, record_id, entry, now_ms=self.clock())
        return await self.apply(op)

    # ---- delayed dispatch ----------------------------------------------------------

    async def take_due(self, limit: int, resend_after_s: float) -> tuple[str, list[Doc]]:
        """Take up to ``limit`` due dispatches (earliest first) for this caller to send:
        a token for ``settle_due`` and the documents taken (what to dispatch). Due
        times left on tasks claimed since are dropped on the way."""
        now = self.clock()
        found = (
            await self.collection.find(ops.due(now), ops.DUE_FIELDS)
            .sort(f.DUE_AT, 1)
            .limit(limit)
            .to_list(None)
        )
        claimed = [d["_id"] for d in found if ExecState.of(d).claim_no > 0]
        if claimed:
            op = ops.forget_due(claimed, now)
            await self.collection.update_many(op.filter, op.update)
        ids = [d["_id"] for d in found if ExecState.of(d).claim_no == 0]
        token = uuid.uuid4().hex
        if not ids:
            return token, []
        take = ops.take_due(
            ids, now_ms=now, resend_at_ms=now + int(resend_after_s * 1000), token=token
        )
        await self.collection.update_many(take.filter, take.update)
        # By _id first, as in claim_many: the token has no index.
        query = {"_id": {"$in": ids}, f.DUE_TOKEN: token}
        return token, await self.collection.find(query, ops.DUE_FIELDS).to_list(None)

    async def settle_due(self, task_ids: list[str], token: str) -> None:
        if task_ids:
            op = ops.settle_due(task_ids, token)
            await self.collection.update_many(op.filter, op.update)

    async def next_due_ms(self) -> int | None:
        """When the earliest delayed dispatch is due (None: none waits)."""
        doc = await self.collection.find_one(ops.waiting(), {"exec": 1}, sort=[(f.DUE_AT, 1)])
        return None if doc is None else ExecState.of(doc).due_ms

    # ---- the outbox relay ----------------------------------------------------------

    async def stale_outboxes(self, cutoff_ms: int, limit: int) -> list[Doc]:
        cursor = self.collection.find(ops.stale_outboxes(cutoff_ms), {f.OUTBOX: 1, f.OUTBOX_AT: 1})
        return await cursor.limit(limit).to_list(None)

    async def forget_drained(self, task_ids: list[str], cutoff_ms: int) -> None:
        if task_ids:
            op = ops.forget_drained(task_ids, cutoff_ms)
            await self.collection.update_many(op.filter, op.update)

    async def forget_if_drained(self, task_ids: Iterable[str]) -> None:
        """Drop the outbox clock of those documents whose outbox is empty now."""
        writes = [ops.forget_if_drained(task_id) for task_id in task_ids]
        if writes:
            await self.collection.bulk_write(
                [UpdateOne(w.filter, w.update) for w in writes], ordered=False
            )

    async def claim_stale_outbox(self, task_id: str, seen_at_ms: int) -> bool:
        return await self.apply(ops.claim_stale_outbox(task_id, seen_at_ms, self.clock()))

    # ---- projections ---------------------------------------------------------------

    async def clear_outboxes(self, cleared: dict[str, list[str]]) -> None:
        """Remove folded events' entries from several documents in one round trip."""
        writes = [ops.clear_outbox(task_id, ids) for task_id, ids in cleared.items() if ids]
        if writes:
            await self.collection.bulk_write(
                [UpdateOne(w.filter, w.update) for w in writes], ordered=False
            )

    async def write_projections(self, writes: list[Op]) -> int:
        """Send projection writes together; how many matched (the rest met a newer write)."""
        if not writes:
            return 0
        result = await self.collection.bulk_write(
            [UpdateOne(w.filter, w.update) for w in writes], ordered=False
        )
        return result.matched_count
