"""The execution state a task document carries beside its projection, as a typed view.

A task document (collection ``tasks``, ``_id`` = task id) holds two things: the
projection (the fields of ``taskcore.domain.task.Task``, written by the fold) and the
execution bookkeeping below, which only ``taskcore.taskdoc.operations`` writes. Field by
field (docs/design.md, "The task document", says the same with the operations that move
them):

- ``exec.open``: a dispatch is outstanding (set at submit, by a retry and by a replay).
- ``exec.finished``: the task's run is over for good at the document level (a terminal
  outcome, a cancel before it ran, a closed parent), before any fold says so.
- ``exec.has_children``: it has (or is about to have) children: set before they exist.
- ``exec.descendants`` (on a root): tasks reserved under it, for TASKCORE_MAX_DESCENDANTS.
- ``exec.dispatch_no``: the last dispatch number issued (1 at submit, +1 per retry/replay).
- ``exec.done_no``: the last dispatch whose outcome is recorded (-1 at submit).
- ``exec.claim_no``, ``exec.claimed_by``, ``exec.lease_until``: the current claim; the
  lease is epoch milliseconds (0: none), ``claimed_by`` is None when nobody holds it.
- ``exec.attempts``: claims over the task's whole life; ``exec.stalls``: claims taken
  over from a holder whose lease expired; ``exec.retry_count``: retries in the budget.
- ``exec.claim_token``, ``exec.finish_token``: which batched claim or finish matched.
- ``exec.due_ms``: a delayed task's first dispatch waits in the store until then (epoch
  ms; absent once sent, or for a task that never waited here); ``exec.due_token``: which
  due-dispatch sweep took it.
- ``cancel_requested``: a cancel was asked for (also a projection field, set ahead of
  its event); ``cancel_cascaded``: the cancel reached every open child.
- ``children_settled``: a parent's final event is written (exactly once).
- ``seq``: the last event sequence reserved for the task.
- ``outbox`` (event id -> entry) and ``outbox_at_ms``: messages not yet known to be folded.
- ``request_hash``: the submission body's hash (Idempotency-Key conflicts).
- ``fold_rev``: incremented by every projection write, which is conditional on it.
- ``subtasks_marked``, ``subtasks_counted``, ``subtasks_marked_ms``,
  ``subtasks_changed_ms``: a parent's pending and done recounts of its children.
- ``dlq.replays``, ``dlq.last_replay_of``, ``dlq.discarded.<dispatch>``: dead-letter actions.
- ``usage_rolled``: the recount mark the stored ``descendant_usage`` was rolled up at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]

OPEN = "exec.open"
FINISHED = "exec.finished"
HAS_CHILDREN = "exec.has_children"
DESCENDANTS = "exec.descendants"
DISPATCH_NO = "exec.dispatch_no"
DONE_NO = "exec.done_no"
CLAIM_NO = "exec.claim_no"
CLAIMED_BY = "exec.claimed_by"
LEASE_UNTIL = "exec.lease_until"
ATTEMPTS = "exec.attempts"
STALLS = "exec.stalls"
RETRY_COUNT = "exec.retry_count"
CLAIM_TOKEN = "exec.claim_token"
FINISH_TOKEN = "exec.finish_token"
DUE_AT = "exec.due_ms"
DUE_TOKEN = "exec.due_token"
CANCEL_REQUESTED = "cancel_requested"
CANCEL_CASCADED = "cancel_cascaded"
CHILDREN_SETTLED = "children_settled"
SEQ = "seq"
OUTBOX = "outbox"
OUTBOX_AT = "outbox_at_ms"
REQUEST_HASH = "request_hash"
FOLD_REV = "fold_rev"
MARKED = "subtasks_marked"
COUNTED = "subtasks_counted"
MARKED_AT = "subtasks_marked_ms"
CHANGED_AT = "subtasks_changed_ms"
REPLAYS = "dlq.replays"
LAST_REPLAY_OF = "dlq.last_replay_of"
USAGE_ROLLED = "usage_rolled"

# Every top-level field the protocol owns: a projection read leaves them out, a
# projection write never touches them.
BOOKKEEPING_FIELDS: tuple[str, ...] = (
    "exec",
    CANCEL_CASCADED,
    CHILDREN_SETTLED,
    SEQ,
    OUTBOX,
    OUTBOX_AT,
    REQUEST_HASH,
    FOLD_REV,
    MARKED,
    COUNTED,
    MARKED_AT,
    CHANGED_AT,
    "dlq",
    USAGE_ROLLED,
)

# What to read for an ``ExecState`` (the outbox's entries only by their keys' absence: a
# read that needs them asks for ``OUTBOX`` too). Whole ``exec``: the stand-in answers a
# dotted projection with flat "exec.x" keys.
STATE_FIELDS: Doc = {
    "exec": 1,
    CANCEL_REQUESTED: 1,
    CANCEL_CASCADED: 1,
    CHILDREN_SETTLED: 1,
    SEQ: 1,
    REQUEST_HASH: 1,
    OUTBOX_AT: 1,
    MARKED: 1,
    CHANGED_AT: 1,
    "dlq": 1,
}
# A whole document but its outbox, which is most of a fresh document's size.
WITHOUT_OUTBOX: Doc = {OUTBOX: 0}

# A dispatch number above any a task will ever be given: ``done_no`` jumps to it when a
# task is cancelled before it ran, so every later delivery of it is "already done".
NEVER_DISPATCH = 2**62


def initial_exec() -> Doc:
    """``exec`` of a new task: its first dispatch outstanding, nobody holding it."""
    return {
        "open": True,
        "finished": False,
        "has_children": False,
        "descendants": 0,
        "dispatch_no": 1,
        "done_no": -1,
        "claim_no": 0,
        "claimed_by": None,
        "lease_until": 0,
        "attempts": 0,
        "stalls": 0,
        "retry_count": 0,
    }


@dataclass(frozen=True)
class ExecState:
    """The protocol's fields of one task document, typed (missing ones at their start)."""

    open: bool
    finished: bool
    has_children: bool
    dispatch_no: int
    done_no: int
    claim_no: int
    claimed_by: str | None
    lease_until: int
    attempts: int
    stalls: int
    retry_count: int
    cancel_requested: bool
    cancel_cascaded: bool
    children_settled: bool
    seq: int
    outbox: frozenset[str]
    replays: int
    last_replay_of: str | None
    request_hash: str | None
    outbox_at_ms: int | None
    subtasks_marked: int | None
    subtasks_changed_ms: int | None
    fold_rev: int | None  # None: never written by a fold
    due_ms: int | None = None  # a dispatch waiting in the store until then

    @property
    def waits_in_store(self) -> bool:
        """Its first dispatch is waiting for its due time (nothing sent yet)."""
        return self.due_ms is not None and self.open and self.claim_no == 0

    @classmethod
    def of(cls, doc: Doc) -> ExecState:
        ex = {**initial_exec(), **(doc.get("exec") or {})}
        return cls(
            open=bool(ex["open"]),
            finished=bool(ex["finished"]),
            has_children=bool(ex["has_children"]),
            dispatch_no=int(ex["dispatch_no"]),
            done_no=int(ex["done_no"]),
            claim_no=int(ex["claim_no"]),
            claimed_by=ex["claimed_by"],
            lease_until=int(ex["lease_until"] or 0),
            attempts=int(ex["attempts"]),
            stalls=int(ex["stalls"]),
            retry_count=int(ex["retry_count"]),
            cancel_requested=bool(doc.get(CANCEL_REQUESTED)),
            cancel_cascaded=bool(doc.get(CANCEL_CASCADED)),
            children_settled=bool(doc.get(CHILDREN_SETTLED)),
            seq=int(doc.get(SEQ) or 0),
            outbox=frozenset(doc.get(OUTBOX) or {}),
            replays=int((doc.get("dlq") or {}).get("replays") or 0),
            last_replay_of=(doc.get("dlq") or {}).get("last_replay_of"),
            request_hash=doc.get(REQUEST_HASH),
            outbox_at_ms=doc.get(OUTBOX_AT),
            subtasks_marked=doc.get(MARKED),
            subtasks_changed_ms=doc.get(CHANGED_AT),
            fold_rev=doc.get(FOLD_REV),
            due_ms=ex.get("due_ms"),
        )

    def held_at(self, now_ms: int) -> bool:
        """Someone holds a lease on it now."""
        return self.lease_until > now_ms

    @property
    def running(self) -> bool:
        """A dispatch is claimed and not finished (its holder may have died)."""
        return self.open and self.claimed_by is not None
