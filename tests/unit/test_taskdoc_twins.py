"""The task-document protocol through its pure twins: no store, milliseconds.

Each test states one rule of the protocol (docs/design.md, "The task document") as what
an operation does to a document in a given state. The store contract suite checks that
MongoDB (or the stand-in) does exactly what these twins say.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from taskcore.taskdoc import Ending, ExecState, Refusal, ReplayMode
from taskcore.taskdoc import operations as ops
from taskcore.taskdoc.matching import apply, matches

from tests.contract.cases import LEASE, NOW, OPERATIONS, STATES, TASK, document, entry

# Which states each operation applies to: the protocol's whole decision table.
APPLIES: dict[str, set[str]] = {
    "claim d1": {"queued", "released", "parent_queued", "with_outbox", "folded_twice"},
    "claim d2": {"retrying"},
    "claim many": {"queued", "released", "parent_queued", "with_outbox", "folded_twice"},
    "take over d1": {"stalled"},
    "extend node-a": {"running", "stalled", "flagged_running", "flagged_stalled"},
    "release node-a": {"running", "stalled", "flagged_running", "flagged_stalled"},
    "finish done node-a": {"running", "stalled", "flagged_running", "flagged_stalled"},
    "finish done node-b": set(),
    "finish retry node-a": {"running", "stalled", "flagged_running", "flagged_stalled"},
    "finish children node-a": {"running", "stalled", "flagged_running", "flagged_stalled"},
    "cancel if idle": {
        "queued",
        "stalled",
        "released",
        "retrying",
        "flagged_stalled",
        "with_outbox",
        "folded_twice",
    },
    "cancel parent if idle": {"parent_queued"},
    "request cancel": {
        "queued",
        "running",
        "stalled",
        "released",
        "retrying",
        "awaiting_children",
        "parent_queued",
        "with_outbox",
        "folded_twice",
    },
    "mark cascaded": set(STATES),
    "mark parent": set(STATES),
    "reserve 3 descendants of 5": set(STATES),
    "reserve 3 descendants of 2": set(),
    "reserve 3": set(STATES),
    "close parent": set(STATES) - {"settled_parent"},
    "reopen d1": {"completed", "dead", "awaiting_children"},
    "discard d1": set(STATES),
    "take due": {"due"},
    "settle due": {"taken"},
    "forget due": {"sent_after_due"},
    "add to outbox": set(STATES),
    "claim stale outbox": {"with_outbox"},
    "forget drained": {"with_outbox"},  # the relay checks the outbox is empty first
    "forget if drained": {"drained"},  # checks it itself: never a document with an entry
    "workflow view (open)": set(STATES) - {"settled_parent"},  # never past its close
    "workflow view (closed)": set(STATES),
    "mark for recount": set(STATES),
    "store counts unmarked": set(STATES),
    "settle counts": set(),
    "roll up usage m1": set(),
    "first roll up usage m1": set(STATES),
    "roll up usage unmarked": set(STATES),
    "rebuilt usage": set(STATES),
    "projection write (unfolded)": set(STATES) - {"folded_twice"},
    "projection write (rev 2)": {"folded_twice"},
}
# The delayed states behave as the states they are beside: a task waiting for its time is
# queued (with or without a sweep's lease), one sent and claimed is running. A drained
# outbox is a queued task with an outbox clock, like one with an entry.
for _applies in APPLIES.values():
    if "with_outbox" in _applies:
        _applies.add("drained")
    if "queued" in _applies:
        _applies |= {"due", "due_later", "taken"}
    if "running" in _applies:
        _applies.add("sent_after_due")


@pytest.mark.parametrize("case", OPERATIONS, ids=lambda c: c.name)
def test_each_operation_applies_exactly_in_the_states_the_protocol_allows(case: object) -> None:
    op = case.op()  # type: ignore[attr-defined]
    applied = {name for name, doc in STATES.items() if op.matches(doc)}
    assert applied == APPLIES[case.name]  # type: ignore[attr-defined]


def test_the_table_names_every_operation() -> None:
    assert {c.name for c in OPERATIONS} == set(APPLIES)


def test_a_claim_takes_the_lease_a_block_of_sequences_and_counts_the_attempt() -> None:
    op = ops.claim(TASK, 1, "node-b", lease_until=NOW + LEASE, token=None)
    after = ExecState.of(op.apply(STATES["queued"]))
    assert (after.claimed_by, after.claim_no, after.lease_until) == ("node-b", 1, NOW + LEASE)
    assert (after.attempts, after.stalls) == (1, 0)
    assert after.seq == 1 + ops.SEQUENCE_BLOCK


def test_a_claimed_dispatch_cannot_be_claimed_again_until_it_is_given_back() -> None:
    claim = ops.claim(TASK, 1, "node-b", lease_until=NOW + LEASE, token=None)
    claimed = claim.apply(STATES["queued"])
    assert not claim.matches(claimed)
    released = ops.release(TASK, 1, "node-b").apply(claimed)
    assert claim.matches(released)


def test_taking_over_a_stalled_claim_counts_a_stall_and_only_after_its_lease() -> None:
    take = ops.take_over(TASK, 1, "node-b", now_ms=NOW, lease_until=NOW + LEASE)
    assert not take.matches(STATES["running"]), "a live lease is never taken over"
    after = ExecState.of(take.apply(STATES["stalled"]))
    assert (after.claimed_by, after.stalls, after.attempts) == ("node-b", 1, 2)


def test_an_outcome_counts_once_and_only_from_the_claim_holder() -> None:
    finish = ops.finish(TASK, 1, "node-a", Ending.DONE, [entry(1001)], now_ms=NOW, token="x")
    done = finish.apply(STATES["running"])
    assert not finish.matches(done), "the same outcome cannot be recorded twice"
    state = ExecState.of(done)
    assert (state.finished, state.open, state.done_no) == (True, False, 1)
    assert (state.claimed_by, state.outbox) == (None, {f"{TASK}:1001"})


def test_a_retry_opens_the_next_dispatch_and_closes_the_old_one() -> None:
    finish = ops.finish(
        TASK, 1, "node-a", Ending.RETRY, [entry(1001)], now_ms=NOW, token="x", retry_count=1
    )
    retrying = finish.apply(STATES["running"])
    state = ExecState.of(retrying)
    assert (state.open, state.finished, state.dispatch_no) == (True, False, 2)
    assert state.retry_count == 1
    assert not ops.claim(TASK, 1, "n", lease_until=NOW + 1, token=None).matches(retrying)
    assert ops.claim(TASK, 2, "n", lease_until=NOW + 1, token=None).matches(retrying)


def test_a_cancelled_queued_task_never_runs_whatever_is_delivered_later() -> None:
    cancelled = ops.cancel_if_idle(TASK, entry(7), parent=False, now_ms=NOW).apply(STATES["queued"])
    for dispatch in (1, 2, 3):
        claim = ops.claim(TASK, dispatch, "n", lease_until=NOW + 1, token=None)
        assert not claim.matches(cancelled)
        assert ops.refusal(cancelled, dispatch, NOW) in (
            Refusal.ALREADY_DONE,
            Refusal.UNKNOWN_DISPATCH,
        )


def test_a_cancelled_idle_parent_waits_for_its_children() -> None:
    op = ops.cancel_if_idle(TASK, entry(7), parent=True, now_ms=NOW)
    state = ExecState.of(op.apply(STATES["parent_queued"]))
    assert (state.cancel_requested, state.open, state.finished) == (True, False, False)


def test_a_flagged_task_is_never_claimed() -> None:
    flagged = ops.request_cancel(TASK, entry(7), now_ms=NOW).apply(STATES["queued"])
    assert not ops.claim(TASK, 1, "n", lease_until=NOW + 1, token=None).matches(flagged)
    assert ops.refusal(flagged, 1, NOW) is Refusal.CANCEL_REQUESTED


def test_a_replay_reopens_a_dead_task_once() -> None:
    op = ops.reopen_for_replay(TASK, 1, entry(8), record_id="r-1", parameters=None, now_ms=NOW)
    reopened = op.apply(STATES["dead"])
    assert not op.matches(reopened), "a raced or resumed replay dispatches once"
    state = ExecState.of(reopened)
    assert (state.open, state.dispatch_no, state.replays) == (True, 2, 1)
    assert (state.last_replay_of, state.retry_count) == ("r-1", 0)
    assert ops.claim(TASK, 2, "n", lease_until=NOW + 1, token=None).matches(reopened)


def test_a_usage_roll_up_of_an_older_mark_never_overwrites_a_newer_one() -> None:
    doc = ops.first_roll_up_usage(TASK, {"calls": 2}, 5).attempt(document())
    assert doc is not None
    assert doc["descendant_usage"] == {"calls": 2}

    assert ops.roll_up_usage(TASK, {"calls": 1}, 4).attempt(doc) is None
    assert ops.first_roll_up_usage(TASK, {"calls": 1}, 4).attempt(doc) is None
    later = ops.roll_up_usage(TASK, {"calls": 3}, 6).attempt(doc)
    assert later is not None
    assert later["descendant_usage"] == {"calls": 3}


@pytest.mark.parametrize(
    ("state", "dispatch", "expected"),
    [
        ("running", 1, Refusal.RUNNING_ELSEWHERE),
        ("stalled", 1, Refusal.STALLED),
        ("completed", 1, Refusal.ALREADY_DONE),
        ("retrying", 1, Refusal.ALREADY_DONE),
        ("retrying", 3, Refusal.UNKNOWN_DISPATCH),
        ("queued", 2, Refusal.UNKNOWN_DISPATCH),
        ("flagged_running", 1, Refusal.RUNNING_ELSEWHERE),
        ("flagged_stalled", 1, Refusal.CANCEL_REQUESTED),
        ("cancelled_idle", 1, Refusal.ALREADY_DONE),
        ("awaiting_children", 1, Refusal.ALREADY_DONE),
    ],
)
def test_a_refused_claim_says_why(state: str, dispatch: int, expected: Refusal) -> None:
    assert ops.refusal(STATES[state], dispatch, NOW) is expected


def test_an_unknown_task_is_refused_as_unknown() -> None:
    assert ops.refusal(None, 1, NOW) is Refusal.UNKNOWN_TASK


@pytest.mark.parametrize(
    ("state", "mode"),
    [
        ("dead", ReplayMode.REOPEN),
        ("queued", ReplayMode.RESEND),
        ("retrying", ReplayMode.MOVED_ON),
        ("running", ReplayMode.RESEND),
    ],
)
def test_a_dead_letter_replays_by_where_its_task_stands(state: str, mode: ReplayMode) -> None:
    assert ops.replay_mode(STATES[state], 1) is mode


def test_the_twin_keeps_booleans_and_numbers_apart_as_mongodb_does() -> None:
    assert not matches({"a": True}, {"a": 1})
    assert matches({"a": 1}, {"a": 1.0})
    assert not matches({"a": {"$gt": ""}}, {"a": None}), "a range never matches null"
    assert apply({"$inc": {"b.c": 2}, "$max": {"d": 3}}, {}) == {"b": {"c": 2}, "d": 3}


# ---- the protocol under any interleaving ----------------------------------------------

NODES = ("node-a", "node-b")
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "take_over", "finish", "retry", "release", "cancel", "tick"]),
        st.sampled_from(NODES),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ACTIONS)
def test_under_any_interleaving_each_dispatch_has_one_outcome_and_nothing_runs_after_a_cancel(
    actions: list[tuple[str, str]],
) -> None:
    doc, now = document(), NOW
    outcomes: dict[int, int] = {}
    held_dispatch: dict[str, int] = {}
    cancelled_idle = False
    for action, node in actions:
        s = ExecState.of(doc)
        d = s.dispatch_no
        lease_until = now + 1000
        if action == "claim":
            op = ops.claim(TASK, d, node, lease_until=lease_until, token=None)
        elif action == "take_over":
            op = ops.take_over(TASK, d, node, now_ms=now, lease_until=lease_until)
        elif action in ("finish", "retry"):
            ending = Ending.RETRY if action == "retry" else Ending.DONE
            dispatch = held_dispatch.get(node, d)
            op = ops.finish(TASK, dispatch, node, ending, [], now_ms=now, token="t")
        elif action == "release":
            op = ops.release(TASK, held_dispatch.get(node, d), node)
        elif action == "cancel":
            op = ops.cancel_if_idle(TASK, entry(5), parent=False, now_ms=now)
        else:
            now += 2000  # every lease taken so far expires
            continue
        after = op.attempt(doc)
        if after is None:
            continue
        if action in ("claim", "take_over"):
            assert not cancelled_idle, "a task cancelled before it ran was claimed"
            held_dispatch[node] = d
        if action in ("finish", "retry"):
            outcomes[held_dispatch.get(node, d)] = outcomes.get(held_dispatch.get(node, d), 0) + 1
        if action == "cancel":
            cancelled_idle = True
        doc = after
    assert all(n == 1 for n in outcomes.values()), outcomes
    state = ExecState.of(doc)
    assert state.attempts >= state.stalls
