"""Task documents in each state the protocol knows, and each operation tried on each.

The same table drives the pure twins' unit tests (tests/unit/test_taskdoc_twins.py) and
the store contract suite (tests/contract/test_task_document_store.py): whatever the twin
says an operation does to a document, the store must do too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskcore.domain.events import EventType, TaskEvent, event_id_for
from taskcore.messages.envelope import Dispatch, OutboxEntry, TaskMessage
from taskcore.taskdoc import Ending, Op
from taskcore.taskdoc import operations as ops
from taskcore.taskdoc.state import NEVER_DISPATCH, initial_exec

Doc = dict[str, Any]
NOW = 1_900_000_000_000  # epoch ms: a fixed "now"
LEASE = 30_000
TASK = "t-1"


def entry(
    sequence: int, type_: EventType = EventType.CANCELLED, dispatch: int | None = None
) -> OutboxEntry:
    event = TaskEvent(
        event_id=event_id_for(TASK, sequence),
        task_id=TASK,
        sequence=sequence,
        type=type_,
        occurred_at=datetime(2030, 1, 1, tzinfo=UTC),
        data={"reason": "test"},
    )
    if dispatch is None:
        return OutboxEntry(event=event)
    message = TaskMessage(task_id=TASK, task_type="diag.noop", user_id="alice", dispatch=dispatch)
    return OutboxEntry(event=event, dispatch=Dispatch(message=message))


def document(**exec_changes: Any) -> Doc:
    """A task document: its first dispatch outstanding, then ``exec_changes`` (keys of
    ``exec``, or top-level fields given with a ``top_`` prefix)."""
    top = {k.removeprefix("top_"): v for k, v in exec_changes.items() if k.startswith("top_")}
    ex = {k: v for k, v in exec_changes.items() if not k.startswith("top_")}
    return {
        "_id": TASK,
        "task_type": "diag.noop",
        "user_id": "alice",
        "status": "QUEUED",
        "exec": {**initial_exec(), **ex},
        "seq": 1,
        "cancel_requested": False,
        "children_settled": False,
        "outbox": {},
        **top,
    }


# The states a task document goes through.
STATES: dict[str, Doc] = {
    "queued": document(),
    "running": document(claim_no=1, claimed_by="node-a", lease_until=NOW + LEASE, attempts=1),
    "stalled": document(claim_no=1, claimed_by="node-a", lease_until=NOW - 1, attempts=1),
    "released": document(claim_no=1, claimed_by=None, lease_until=0, attempts=1),
    "retrying": document(dispatch_no=2, done_no=1, claim_no=1, attempts=1, retry_count=1),
    "completed": document(open=False, finished=True, done_no=1, claim_no=1, attempts=1),
    "dead": document(open=False, finished=True, done_no=1, claim_no=1, attempts=1),
    "awaiting_children": document(open=False, done_no=1, claim_no=1, has_children=True),
    "cancelled_idle": document(
        open=False, finished=True, done_no=NEVER_DISPATCH, top_cancel_requested=True
    ),
    "flagged_running": document(
        claim_no=1, claimed_by="node-a", lease_until=NOW + LEASE, top_cancel_requested=True
    ),
    "flagged_stalled": document(
        claim_no=1, claimed_by="node-a", lease_until=NOW - 1, top_cancel_requested=True
    ),
    "parent_queued": document(has_children=True),
    "settled_parent": document(
        open=False, finished=True, has_children=True, top_children_settled=True
    ),
    "with_outbox": document(
        top_outbox={f"{TASK}:1": entry(1).model_dump(mode="json")}, top_outbox_at_ms=NOW - 60_000
    ),
    # Every entry folded and cleared; the clock is left for the relay or the aggregator.
    "drained": document(top_outbox_at_ms=NOW - 60_000),
    "folded_twice": document(top_fold_rev=2),
    # Delayed tasks whose first dispatch waits in the store.
    "due": document(due_ms=NOW - 1),
    "due_later": document(due_ms=NOW + 60_000),
    "taken": document(due_ms=NOW + 30_000, due_token="tok"),
    # Sent and claimed, but the sweep that sent it died before settling it.
    "sent_after_due": document(
        claim_no=1, claimed_by="node-a", lease_until=NOW + LEASE, attempts=1, due_ms=NOW - 1
    ),
}


USAGE = {
    "prompt_tokens": 3,
    "completion_tokens": 2,
    "calls": 1,
    "cost_nanos": 5,
    "by_provider": {"p": {"prompt_tokens": 3, "completion_tokens": 2, "calls": 1, "cost_nanos": 5}},
}


@dataclass(frozen=True)
class Case:
    name: str
    op: Callable[[], Op]


def _finish(ending: Ending, node: str = "node-a", dispatch: int = 1) -> Op:
    return ops.finish(
        TASK, dispatch, node, ending, [entry(1001)], now_ms=NOW, token="tok", retry_count=None
    )


# Every operation of the protocol, with arguments that make sense against STATES.
OPERATIONS: list[Case] = [
    Case("claim d1", lambda: ops.claim(TASK, 1, "node-b", lease_until=NOW + LEASE, token=None)),
    Case("claim d2", lambda: ops.claim(TASK, 2, "node-b", lease_until=NOW + LEASE, token=None)),
    Case(
        "claim many",
        lambda: ops.claim([TASK, "other"], 1, "node-b", lease_until=NOW + LEASE, token="t"),
    ),
    Case(
        "take over d1",
        lambda: ops.take_over(TASK, 1, "node-b", now_ms=NOW, lease_until=NOW + LEASE),
    ),
    Case("extend node-a", lambda: ops.extend_leases([TASK], "node-a", NOW + 2 * LEASE)),
    Case("release node-a", lambda: ops.release(TASK, 1, "node-a")),
    Case("finish done node-a", lambda: _finish(Ending.DONE)),
    Case("finish done node-b", lambda: _finish(Ending.DONE, node="node-b")),
    Case("finish retry node-a", lambda: _finish(Ending.RETRY)),
    Case("finish children node-a", lambda: _finish(Ending.CHILDREN)),
    Case("cancel if idle", lambda: ops.cancel_if_idle(TASK, entry(7), parent=False, now_ms=NOW)),
    Case(
        "cancel parent if idle",
        lambda: ops.cancel_if_idle(
            TASK, entry(7, EventType.AWAITING_CHILDREN), parent=True, now_ms=NOW
        ),
    ),
    Case(
        "request cancel",
        lambda: ops.request_cancel(TASK, entry(7, EventType.CANCEL_REQUESTED), now_ms=NOW),
    ),
    Case("mark cascaded", lambda: ops.mark_cascaded(TASK)),
    Case("mark parent", lambda: ops.mark_parent(TASK)),
    Case("reserve 3 descendants of 5", lambda: ops.reserve_descendants(TASK, 3, 5)),
    Case("reserve 3 descendants of 2", lambda: ops.reserve_descendants(TASK, 3, 2)),
    Case("reserve 3", lambda: ops.reserve_sequences(TASK, 3)),
    Case(
        "close parent",
        lambda: ops.close_parent(TASK, {"total": 2, "completed": 2}, entry(9), now_ms=NOW),
    ),
    Case(
        "reopen d1",
        lambda: ops.reopen_for_replay(
            TASK,
            1,
            entry(8, EventType.REPLAYED, dispatch=2),
            record_id="r-1",
            parameters={"x": 1},
            now_ms=NOW,
        ),
    ),
    Case(
        "add to outbox",
        lambda: ops.add_to_outbox(TASK, entry(8, EventType.STEP_FAILED), now_ms=NOW),
    ),
    Case(
        "discard d1",
        lambda: ops.mark_discarded(TASK, 1, "r-1", entry(8, EventType.DISCARDED), now_ms=NOW),
    ),
    Case(
        "take due",
        lambda: ops.take_due([TASK, "other"], now_ms=NOW, resend_at_ms=NOW + 30_000, token="t"),
    ),
    Case("settle due", lambda: ops.settle_due([TASK], "tok")),
    Case("forget due", lambda: ops.forget_due([TASK], NOW)),
    Case("claim stale outbox", lambda: ops.claim_stale_outbox(TASK, NOW - 60_000, NOW)),
    Case("forget drained", lambda: ops.forget_drained([TASK], NOW)),
    Case("forget if drained", lambda: ops.forget_if_drained(TASK)),
    Case("workflow view (open)", lambda: ops.write_workflow_view(TASK, {"a": 1}, closed=False)),
    Case("workflow view (closed)", lambda: ops.write_workflow_view(TASK, {"a": 1}, closed=True)),
    Case("mark for recount", lambda: ops.mark_for_recount([TASK], NOW)),
    Case(
        "store counts unmarked",
        lambda: ops.store_counts(TASK, {"total": 1}, None, changed_ms=NOW),
    ),
    Case("settle counts", lambda: ops.settle_counts(TASK, {"total": 1}, 1, changed_ms=None)),
    Case("roll up usage m1", lambda: ops.roll_up_usage(TASK, USAGE, 1)),
    Case("first roll up usage m1", lambda: ops.first_roll_up_usage(TASK, USAGE, 1)),
    Case("roll up usage unmarked", lambda: ops.roll_up_usage(TASK, USAGE, None)),
    Case("rebuilt usage", lambda: ops.rebuilt_usage(TASK, USAGE)),
    Case(
        "projection write (unfolded)",
        lambda: ops.write_projection(document(), {"status": "RUNNING"}, [f"{TASK}:1"]),
    ),
    Case(
        "projection write (rev 2)",
        lambda: ops.write_projection(document(top_fold_rev=2), {"status": "RUNNING"}, []),
    ),
]
