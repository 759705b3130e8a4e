"""The task document's conditional operations, as data: a filter and an update each.

An operation applies to one document atomically (MongoDB's single-document guarantee is
all the protocol relies on: no transactions). Its filter is the precondition, so of
several racing writers exactly those whose precondition still holds take effect. Each
``Op`` has its pure twin in ``matches``/``apply`` (``taskcore.taskdoc.matching``); the
store adapter (``taskcore.taskdoc.documents``) only sends these to MongoDB.

The protocol, in one place (docs/design.md tells the same story with the reasons):

- claim: a dispatch is claimed by one executor at a time, only while it is the task's
  outstanding dispatch, nobody holds it and no cancel is requested; taking over from a
  holder whose lease expired is a separate operation that counts a stall;
- finish: an outcome is recorded only by the holder of that exact claim, once; a retry
  leaves the next dispatch outstanding, children leave the task awaiting them;
- cancel: a task nobody is running is closed at once (every later delivery is then
  "already done"); one being run is flagged and its holder stops at a checkpoint;
- replay: a dead-lettered task reopens only while still closed at exactly that dispatch;
- close parent: a parent's final event is written once;
- due dispatch: a delayed task's first dispatch is taken by one sweep at a time when it
  is due, and sent again only if that sweep died before it was sent;
- outbox: every operation that must publish writes its messages in the same update.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from taskcore.messages.envelope import OutboxEntry
from taskcore.taskdoc import matching
from taskcore.taskdoc import state as f
from taskcore.taskdoc.state import NEVER_DISPATCH, Doc, ExecState, initial_exec

# Sequences an executor reserves with each claim: its events need no further round trip.
SEQUENCE_BLOCK = 1000


@dataclass(frozen=True)
class Op:
    """One conditional single-document write."""

    filter: Doc
    update: Doc

    def matches(self, doc: Doc) -> bool:
        """The pure twin of the precondition: whether the store would apply it to ``doc``."""
        return matching.matches(self.filter, doc)

    def apply(self, doc: Doc) -> Doc:
        """The pure twin of the update: ``doc`` after it (whether or not it matched)."""
        return matching.apply(self.update, doc)

    def attempt(self, doc: Doc) -> Doc | None:
        """The document after the operation, or None where the precondition fails."""
        return self.apply(doc) if self.matches(doc) else None


# ---- the outbox ---------------------------------------------------------------------


def outbox_fields(entries: Iterable[OutboxEntry], now_ms: int) -> Doc:
    """``$set`` fields that add entries to a document's outbox."""
    fields: Doc = {f"{f.OUTBOX}.{e.event.event_id}": e.model_dump(mode="json") for e in entries}
    fields[f.OUTBOX_AT] = now_ms
    return fields


def outbox_cleared(event_ids: Iterable[str]) -> Doc:
    """``$unset`` fields that remove folded events' entries."""
    return {f"{f.OUTBOX}.{event_id}": "" for event_id in event_ids}


def outbox_entries(doc: Doc) -> list[OutboxEntry]:
    """The entries a document holds, in sequence order."""
    entries = [OutboxEntry.model_validate(e) for e in (doc.get(f.OUTBOX) or {}).values()]
    return sorted(entries, key=lambda e: e.event.sequence)


def outbox_entry(doc: Doc, event_id: str) -> OutboxEntry | None:
    """The entry of one event, if the document still holds it."""
    raw = (doc.get(f.OUTBOX) or {}).get(event_id)
    return OutboxEntry.model_validate(raw) if isinstance(raw, dict) else None


def _with_outbox(update: Doc, entries: list[OutboxEntry], now_ms: int) -> Doc:
    if entries:
        update.setdefault("$set", {}).update(outbox_fields(entries, now_ms))
    return update


# ---- creating -----------------------------------------------------------------------


def new_document(
    projection: Doc,
    entries: list[OutboxEntry],
    *,
    request_hash: str | None,
    now_ms: int,
    due_ms: int | None = None,
) -> Doc:
    """A new task's one document: its first projection, the first dispatch outstanding,
    and the submission's messages in its outbox. With ``due_ms`` the first dispatch is
    not in the outbox: it waits in the store until then (``take_due``)."""
    sequences = [e.event.sequence for e in entries]
    ex = initial_exec()
    if due_ms is not None:
        ex["due_ms"] = due_ms
    return {
        **projection,
        "exec": ex,
        f.SEQ: max(sequences, default=0),
        f.CANCEL_REQUESTED: False,
        f.CHILDREN_SETTLED: False,
        f.REQUEST_HASH: request_hash,
        f.OUTBOX: {e.event.event_id: e.model_dump(mode="json") for e in entries},
        f.OUTBOX_AT: now_ms,
    }


def restored_document(projection: Doc, *, version: int, terminal: bool) -> Doc:
    """A document for a task found in the log with none (``taskcore rebuild``): nothing
    outstanding, so nothing runs again; sequences continue after the log's."""
    ex = {**initial_exec(), "open": False, "finished": terminal, "done_no": NEVER_DISPATCH}
    return {
        **projection,
        "exec": ex,
        f.SEQ: version,
        f.CANCEL_REQUESTED: bool(projection.get(f.CANCEL_REQUESTED)),
        f.CHILDREN_SETTLED: terminal,
    }


def reserve_sequences(task_id: str, count: int) -> Op:
    """Take the next ``count`` sequences (read ``seq`` after: the last one taken)."""
    return Op({"_id": task_id}, {"$inc": {f.SEQ: count}})


# ---- claims -------------------------------------------------------------------------


def _claim_update(dispatch: int, node: str, lease_until: int, token: str | None) -> Doc:
    fields: Doc = {f.CLAIM_NO: dispatch, f.CLAIMED_BY: node, f.LEASE_UNTIL: lease_until}
    if token is not None:
        fields[f.CLAIM_TOKEN] = token
    return {"$set": fields, "$inc": {f.SEQ: SEQUENCE_BLOCK, f.ATTEMPTS: 1}}


def _claimable(dispatch: int) -> Doc:
    return {f.OPEN: True, f.DISPATCH_NO: dispatch, f.CANCEL_REQUESTED: False}


def claim(
    task_id: str | list[str], dispatch: int, node: str, *, lease_until: int, token: str | None
) -> Op:
    """Claim a dispatch nobody holds (several tasks at once with a list and a token)."""
    selector: Any = {"$in": task_id} if isinstance(task_id, list) else task_id
    return Op(
        {"_id": selector, **_claimable(dispatch), f.CLAIMED_BY: None},
        _claim_update(dispatch, node, lease_until, token),
    )


def take_over(task_id: str, dispatch: int, node: str, *, now_ms: int, lease_until: int) -> Op:
    """Claim a dispatch whose holder stopped renewing its lease: the attempt it was making
    stalled (its executor died), which counts."""
    update = _claim_update(dispatch, node, lease_until, None)
    update["$inc"][f.STALLS] = 1
    return Op(
        {
            "_id": task_id,
            **_claimable(dispatch),
            f.CLAIMED_BY: {"$gt": ""},  # a holder (a range never matches null)
            f.LEASE_UNTIL: {"$lt": now_ms},
        },
        update,
    )


def extend_leases(task_ids: list[str], node: str, lease_until: int) -> Op:
    """The heartbeat: every lease this node holds among ``task_ids`` runs until then."""
    return Op(
        {"_id": {"$in": task_ids}, f.CLAIMED_BY: node}, {"$set": {f.LEASE_UNTIL: lease_until}}
    )


def _holding(task_id: str, dispatch: int, node: str) -> Doc:
    return {"_id": task_id, f.CLAIMED_BY: node, f.CLAIM_NO: dispatch}


def release(task_id: str, dispatch: int, node: str) -> Op:
    """Give a claim back unfinished, so the redelivered message is claimed at once."""
    return Op(_holding(task_id, dispatch, node), {"$set": {f.LEASE_UNTIL: 0, f.CLAIMED_BY: None}})


class Ending(StrEnum):
    """What a recorded outcome leaves the task waiting for."""

    DONE = "done"  # nothing: the task's run is over (completed, failed, dead, cancelled)
    RETRY = "retry"  # the next dispatch, already in the outbox
    CHILDREN = "children"  # its children: the aggregator closes it once they settle


def finish(
    task_id: str,
    dispatch: int,
    node: str,
    ending: Ending,
    entries: list[OutboxEntry],
    *,
    now_ms: int,
    token: str,
    retry_count: int | None = None,
) -> Op:
    """Record a claim's outcome and its messages, only if this claim still holds."""
    fields: Doc = {
        f.DONE_NO: dispatch,
        f.LEASE_UNTIL: 0,
        f.CLAIMED_BY: None,
        f.FINISH_TOKEN: token,
        f.OPEN: ending is Ending.RETRY,
        f.FINISHED: ending is Ending.DONE,
    }
    if ending is Ending.RETRY:
        fields[f.DISPATCH_NO] = dispatch + 1
    if retry_count is not None:
        fields[f.RETRY_COUNT] = retry_count
    return Op(_holding(task_id, dispatch, node), _with_outbox({"$set": fields}, entries, now_ms))


class Refusal(StrEnum):
    """Why a dispatch could not be claimed (a metric label: a fixed vocabulary)."""

    UNKNOWN_TASK = "unknown_task"  # no such task document
    ALREADY_DONE = "already_done"  # finished, or a dispatch it has moved past
    UNKNOWN_DISPATCH = "unknown_dispatch"  # a dispatch never issued: not ours to run
    RUNNING_ELSEWHERE = "running_elsewhere"  # a live holder has it
    STALLED = "stalled"  # its holder's lease expired: take it over
    CANCEL_REQUESTED = "cancel_requested"  # close it as cancelled instead of running it


def refusal(doc: Doc | None, dispatch: int, now_ms: int) -> Refusal:
    """Why ``claim`` did not match ``doc`` for ``dispatch`` (pure; from a fresh read)."""
    if doc is None:
        return Refusal.UNKNOWN_TASK
    s = ExecState.of(doc)
    if dispatch > s.dispatch_no:
        return Refusal.UNKNOWN_DISPATCH
    if s.finished or not s.open or dispatch < s.dispatch_no or s.done_no >= dispatch:
        return Refusal.ALREADY_DONE
    if s.held_at(now_ms):
        # Checked before the cancel flag: a holder that is alive records the cancel itself,
        # and if it died the task must be looked at again once its lease has expired.
        return Refusal.RUNNING_ELSEWHERE
    if s.cancel_requested:
        return Refusal.CANCEL_REQUESTED
    if s.claimed_by is not None:
        return Refusal.STALLED
    return Refusal.RUNNING_ELSEWHERE  # released between the claim and this read: again


# ---- cancellation -------------------------------------------------------------------


def cancel_if_idle(task_id: str, entry: OutboxEntry, *, parent: bool, now_ms: int) -> Op:
    """Cancel a task nobody is running (a dispatch outstanding, no live lease): it never
    runs, whatever deliveries of it are still on their way. A task without children ends
    CANCELLED at once (``entry``: ``task.cancelled``); a parent is never terminal before
    its children, so it waits for them (``entry``: ``task.awaiting_children``) and the
    aggregator closes it as CANCELLED once they settle."""
    return Op(
        {"_id": task_id, f.OPEN: True, f.LEASE_UNTIL: {"$lt": now_ms}, f.HAS_CHILDREN: parent},
        _with_outbox(
            {
                "$set": {
                    f.CANCEL_REQUESTED: True,
                    f.OPEN: False,
                    f.FINISHED: not parent,
                    f.CLAIMED_BY: None,
                    f.DONE_NO: NEVER_DISPATCH,
                },
                # A delayed dispatch that never went out never will.
                "$unset": {f.DUE_AT: "", f.DUE_TOKEN: ""},
            },
            [entry],
            now_ms,
        ),
    )


def reserve_descendants(root_id: str, count: int, limit: int) -> Op:
    """Count ``count`` more tasks under a root, only while that stays within ``limit``:
    concurrent parents of one tree cannot together pass it."""
    return Op(
        {"_id": root_id, f.DESCENDANTS: {"$lte": limit - count}},
        {"$inc": {f.DESCENDANTS: count}},
    )


def write_workflow_view(task_id: str, shown: Doc, *, closed: bool) -> Op:
    """A workflow's view of its steps. While it is open, only while it is open: a runtime
    that read an older state cannot overwrite the view its closer wrote (``closed``: the
    closer's own write, after ``close_parent``, of the one final state)."""
    where: Doc = {"_id": task_id} if closed else {"_id": task_id, f.CHILDREN_SETTLED: False}
    return Op(where, {"$set": {"workflow": shown}})


def mark_parent(task_id: str) -> Op:
    """The task is about to create children (recorded first, so no child is ever created
    that a cancel would not look for)."""
    return Op({"_id": task_id}, {"$set": {f.HAS_CHILDREN: True}})


def request_cancel(task_id: str, entry: OutboxEntry, *, now_ms: int) -> Op:
    """Flag an unfinished task (once): its holder stops at its next checkpoint, claims
    are refused, and a parent is closed as CANCELLED once its children settle."""
    return Op(
        {"_id": task_id, f.CANCEL_REQUESTED: False, f.FINISHED: False},
        _with_outbox({"$set": {f.CANCEL_REQUESTED: True}}, [entry], now_ms),
    )


def mark_cascaded(task_id: str) -> Op:
    """The cancel reached every child that was open: a repeated cancel costs one read."""
    return Op({"_id": task_id}, {"$set": {f.CANCEL_CASCADED: True}})


OPEN_CHILDREN_FIELDS = {"exec": 1, f.CANCEL_REQUESTED: 1, f.CANCEL_CASCADED: 1}


def open_children(parent_ids: list[str]) -> Doc:
    """The filter of the children of these parents that are not finished yet."""
    return {"parent_task_id": {"$in": parent_ids}, f.FINISHED: False}


# ---- parents ------------------------------------------------------------------------


def close_parent(parent_id: str, counts: Doc, entry: OutboxEntry, *, now_ms: int) -> Op:
    """Write a parent's final event, once, with the counts it closed on."""
    return Op(
        {"_id": parent_id, f.CHILDREN_SETTLED: False},
        _with_outbox(
            {
                "$set": {
                    f.CHILDREN_SETTLED: True,
                    f.FINISHED: True,
                    "subtasks": counts,
                }
            },
            [entry],
            now_ms,
        ),
    )


def mark_for_recount(parent_ids: list[str], now_ms: int) -> Op:
    """These parents' counters may be stale (recorded before the batch that says so is
    acked; a recount that reads mark ``m`` settles every mark up to ``m``)."""
    return Op(
        {"_id": {"$in": parent_ids}},
        {
            "$inc": {f.MARKED: 1},
            "$set": {f.MARKED_AT: now_ms},
            # Created here, so later conditions compare numbers, never a missing field.
            "$max": {f.COUNTED: 0},
        },
    )


def store_counts(parent_id: str, counts: Doc, mark: int | None, *, changed_ms: int | None) -> Op:
    """Store a recount that read mark ``mark``, unless a recount of a later mark did.

    With ``mark`` None (never marked) it writes only while still unmarked. The update
    also clears the stamp, which ``settle_counts`` then checks against newer marks.
    """
    fields: Doc = {"subtasks": counts}
    if changed_ms is not None:  # for the watchdog's "oldest quiet parent" gauge
        fields[f.CHANGED_AT] = changed_ms
    if mark is None:
        unmarked = {"$exists": False}
        return Op({"_id": parent_id, f.MARKED: unmarked, f.COUNTED: unmarked}, {"$set": fields})
    # No $or in these filters: the stand-in applies an update filtered by _id plus $or to
    # another document (docs/design.md, "More stand-in findings").
    return Op(
        {"_id": parent_id, f.COUNTED: {"$lt": mark}},
        {"$set": {**fields, f.COUNTED: mark}},
    )


def settle_counts(parent_id: str, counts: Doc, mark: int, *, changed_ms: int | None) -> Op:
    """``store_counts`` when no newer mark arrived meanwhile: it also clears the stamp
    the watchdog looks for."""
    op = store_counts(parent_id, counts, mark, changed_ms=changed_ms)
    return Op({**op.filter, f.MARKED: mark}, {**op.update, "$unset": {f.MARKED_AT: ""}})


def roll_up_usage(parent_id: str, usage: Doc | None, mark: int | None) -> Op:
    """Store a parent's ``descendant_usage`` (the sum of its children's) as a recount that
    read mark ``mark`` found it, unless a roll-up of a later mark got there first: the
    same rule as ``store_counts``, on a mark of its own (``usage_rolled``). With ``mark``
    None (never marked) it writes only while still unmarked."""
    fields: Doc = {"descendant_usage": usage}
    if mark is None:
        return Op({"_id": parent_id, f.MARKED: {"$exists": False}}, {"$set": fields})
    return Op(
        {"_id": parent_id, f.USAGE_ROLLED: {"$lt": mark}},
        {"$set": {**fields, f.USAGE_ROLLED: mark}},
    )


def first_roll_up_usage(parent_id: str, usage: Doc | None, mark: int) -> Op:
    """``roll_up_usage`` on a parent never rolled up before (a range never matches a
    missing field, so the first roll-up needs its own precondition)."""
    return Op(
        {"_id": parent_id, f.USAGE_ROLLED: {"$exists": False}},
        {"$set": {"descendant_usage": usage, f.USAGE_ROLLED: mark}},
    )


def rebuilt_usage(parent_id: str, usage: Doc | None) -> Op:
    """``taskcore rebuild``'s ``descendant_usage``, recomputed from the folded children."""
    return Op({"_id": parent_id}, {"$set": {"descendant_usage": usage}})


# ---- dead letters -------------------------------------------------------------------


class ReplayMode(StrEnum):
    REOPEN = "task"  # the task died at this dispatch: open the next one
    RESEND = "resend"  # the broker dropped this dispatch before it ran: send it again
    MOVED_ON = "moved_on"  # the task is past this dispatch: nothing to replay


def replay_mode(doc: Doc, dispatch: int) -> ReplayMode:
    """How a dead letter of ``dispatch`` can be replayed, given the task document now."""
    s = ExecState.of(doc)
    if s.dispatch_no == dispatch and not s.open and s.done_no == dispatch:
        return ReplayMode.REOPEN
    if s.dispatch_no == dispatch and s.open and s.done_no < dispatch:
        return ReplayMode.RESEND
    return ReplayMode.MOVED_ON


def reopen_for_replay(
    task_id: str,
    dispatch: int,
    entry: OutboxEntry,
    *,
    record_id: str,
    parameters: dict[str, Any] | None,
    now_ms: int,
) -> Op:
    """Open dispatch ``dispatch + 1`` with a fresh retry budget, only while the task is
    still closed at exactly ``dispatch``: a raced or resumed replay matches once."""
    fields: Doc = {
        f.OPEN: True,
        f.FINISHED: False,
        f.DISPATCH_NO: dispatch + 1,
        f.LEASE_UNTIL: 0,
        f.CLAIMED_BY: None,
        f.RETRY_COUNT: 0,
        f.LAST_REPLAY_OF: record_id,
    }
    if parameters is not None:
        # The executor runs what the document says: it must not wait for the fold.
        fields["parameters"] = parameters
    return Op(
        {
            "_id": task_id,
            f.OPEN: False,
            f.DISPATCH_NO: dispatch,
            f.DONE_NO: dispatch,
            f.CANCEL_REQUESTED: False,
        },
        _with_outbox({"$set": fields, "$inc": {f.REPLAYS: 1}}, [entry], now_ms),
    )


def add_to_outbox(task_id: str, entry: OutboxEntry, *, now_ms: int) -> Op:
    """Record an event of the task through its outbox, unconditionally (its sequence was
    reserved; the fold logs it once)."""
    return Op({"_id": task_id}, _with_outbox({}, [entry], now_ms))


def mark_discarded(
    task_id: str, dispatch: int, record_id: str, entry: OutboxEntry, *, now_ms: int
) -> Op:
    """Record a dead letter's discard on its task once per dispatch."""
    marker = f"dlq.discarded.{dispatch}"
    return Op(
        {"_id": task_id, marker: {"$exists": False}},
        _with_outbox({"$set": {marker: record_id}}, [entry], now_ms),
    )


# ---- delayed dispatch ---------------------------------------------------------------


def due(now_ms: int) -> Doc:
    """The filter of documents whose delayed dispatch is due (or was taken by a sweep
    that has not confirmed sending it within its lease)."""
    return {f.DUE_AT: {"$lte": now_ms}}


def waiting() -> Doc:
    """The filter of every document with a delayed dispatch still to send."""
    return {f.DUE_AT: {"$gte": 0}}


DUE_FIELDS: Doc = {
    "exec": 1,
    "task_type": 1,
    "user_id": 1,
    "tier": 1,
    "priority": 1,
    "parameters": 1,
}


def take_due(task_ids: list[str], *, now_ms: int, resend_at_ms: int, token: str) -> Op:
    """Take due dispatches to send them: each is taken by one sweep, which moves its due
    time to ``resend_at_ms``, so if that sweep dies before ``settle_due`` another sends
    it then (a second send of the same dispatch is harmless). Only a task never claimed
    and still open is taken: a cancelled one is closed, a claimed one was sent."""
    return Op(
        {"_id": {"$in": task_ids}, f.DUE_AT: {"$lte": now_ms}, f.OPEN: True, f.CLAIM_NO: 0},
        {"$set": {f.DUE_AT: resend_at_ms, f.DUE_TOKEN: token}},
    )


def settle_due(task_ids: list[str], token: str) -> Op:
    """The dispatches this sweep took are confirmed sent: nothing waits any more."""
    return Op(
        {"_id": {"$in": task_ids}, f.DUE_TOKEN: token},
        {"$unset": {f.DUE_AT: "", f.DUE_TOKEN: ""}},
    )


def forget_due(task_ids: list[str], now_ms: int) -> Op:
    """Drop a due time left on a task that was claimed since (its sender died after
    sending, before settling): it can never be due again."""
    return Op(
        {"_id": {"$in": task_ids}, f.DUE_AT: {"$lte": now_ms}, f.CLAIM_NO: {"$gt": 0}},
        {"$unset": {f.DUE_AT: "", f.DUE_TOKEN: ""}},
    )


# ---- the outbox relay ---------------------------------------------------------------


def stale_outboxes(cutoff_ms: int) -> Doc:
    """The filter of documents whose outbox was last written before ``cutoff_ms``."""
    return {f.OUTBOX_AT: {"$lt": cutoff_ms}}


def forget_drained(task_ids: list[str], cutoff_ms: int) -> Op:
    """Drop the outbox clock of documents found empty (a writer that added an entry since
    moved the clock past the cutoff, which this excludes)."""
    return Op(
        {"_id": {"$in": task_ids}, f.OUTBOX_AT: {"$lt": cutoff_ms}}, {"$unset": {f.OUTBOX_AT: ""}}
    )


def forget_if_drained(task_id: str) -> Op:
    """Drop the outbox clock of a document whose outbox is empty now, so no relay reads it
    again. Safe at any moment: a writer adds an entry and moves the clock in one update,
    so a document with an entry never matches. The aggregator sends it for tasks it has
    just finished folding, sparing each relay a read and a write per task later.

    ``$expr`` equality, not ``{outbox: {}}``: both mean "exactly empty" to MongoDB, but
    the nx-27017 stand-in matches ``{outbox: {}}`` against any outbox, even a missing one
    (the contract suite's "drained" and "with outbox" states tell the two apart)."""
    return Op(
        {
            "_id": task_id,
            f.OUTBOX_AT: {"$exists": True},
            "$expr": {"$eq": [f"${f.OUTBOX}", {"$literal": {}}]},
        },
        {"$unset": {f.OUTBOX_AT: ""}},
    )


def claim_stale_outbox(task_id: str, seen_at_ms: int, now_ms: int) -> Op:
    """Move a stale outbox's clock forward before re-sending it, only if nobody else did:
    of the relays of every service and replica, one sends, once per period."""
    return Op({"_id": task_id, f.OUTBOX_AT: seen_at_ms}, {"$set": {f.OUTBOX_AT: now_ms}})


# ---- the projection -----------------------------------------------------------------


def revision(fold_rev: int) -> Doc:
    """The write counter's field at a value (for a copy of a document kept in memory)."""
    return {f.FOLD_REV: fold_rev}


def without_outbox(doc: Doc) -> Doc:
    """A document without its outbox (the part a copy kept in memory never needs)."""
    return {k: v for k, v in doc.items() if k != f.OUTBOX}


def clear_outbox(task_id: str, event_ids: list[str]) -> Op:
    """Remove folded events' entries, whatever else changed meanwhile (the projection is
    not touched, so no revision is taken)."""
    return Op({"_id": task_id}, {"$unset": outbox_cleared(event_ids)})


def unchanged_since(doc: Doc) -> Doc:
    """The filter of a projection write that applies only if nobody wrote it since ``doc``."""
    if f.FOLD_REV in doc:
        return {"_id": doc["_id"], f.FOLD_REV: doc[f.FOLD_REV]}
    return {"_id": doc["_id"], f.FOLD_REV: {"$exists": False}}


def write_projection(doc: Doc, fields: Doc, cleared: list[str]) -> Op:
    """Move the document from the projection it held when read (``doc``) to ``fields``
    (none: the fold changed nothing, and the write only takes a revision, so that a
    concurrent fold from the same revision, whose log may have missed these events,
    has to fold again), and clear the folded events' outbox entries."""
    update: Doc = {"$inc": {f.FOLD_REV: 1}}
    if fields:
        update["$set"] = fields
    if cleared:
        update["$unset"] = outbox_cleared(cleared)
    return Op(unchanged_since(doc), update)
