"""The store does what the protocol's pure twins say, operation by operation, and holds
the protocol's guarantees under races (claims, finishes, cancels, replays, sequences).

Runs unchanged against the stand-in and against MongoDB (``MONGO_URL``); the few tests
marked ``requires_real_mongo`` check premises the stand-in gets wrong.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError
from taskcore.adapters.mongo import Store, event_to_doc
from taskcore.domain.events import EventType, TaskEvent
from taskcore.taskdoc import ClaimRefused, Ending, ExecState, Finish, Refusal, TaskDocuments
from taskcore.taskdoc import operations as ops

from tests.contract.cases import NOW, OPERATIONS, STATES, TASK, Case, document, entry

Doc = dict[str, Any]
BOOLEAN_FIELDS = ("open", "finished", "has_children")


def normalised(doc: Doc) -> Doc:
    """A document as compared: booleans as booleans (the stand-in reads a ``$set`` True
    back as 1), and the dead-letter markers' nesting as MongoDB keeps it."""
    doc = copy.deepcopy(doc)
    for name in BOOLEAN_FIELDS:
        if name in doc.get("exec", {}):
            doc["exec"][name] = bool(doc["exec"][name])
    for name in ("cancel_requested", "children_settled", "cancel_cascaded"):
        if name in doc:
            doc[name] = bool(doc[name])
    return doc


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("case", OPERATIONS, ids=lambda c: c.name)
async def test_the_store_applies_each_operation_as_its_twin_says(
    store: Store, case: Case, state: str
) -> None:
    doc = copy.deepcopy(STATES[state])
    await store.tasks.insert_one(copy.deepcopy(doc))
    op = case.op()

    result = await store.tasks.update_many(op.filter, op.update)

    assert (result.matched_count == 1) == op.matches(doc)
    stored = await store.tasks.find_one({"_id": TASK})
    expected = op.apply(doc) if op.matches(doc) else doc
    assert normalised(stored) == normalised(expected)


async def test_of_racing_claims_of_one_dispatch_exactly_one_wins(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    await store.tasks.insert_one(document())
    results = await asyncio.gather(
        *(documents.claim(TASK, 1, f"node-{i}", 30) for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    refusals = {r.reason for r in results if isinstance(r, ClaimRefused)}
    assert refusals == {Refusal.RUNNING_ELSEWHERE}
    assert ExecState.of(await documents.get(TASK) or {}).attempts == 1


async def test_a_batch_claim_takes_only_what_is_claimable(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    ids = [f"t-{i}" for i in range(6)]
    await store.tasks.insert_many([{**document(), "_id": i} for i in ids])
    await documents.claim("t-0", 1, "elsewhere", 30)
    await documents.request_cancel("t-1", entry(5))
    claims = await documents.claim_many(ids, 1, "node-a", 30)
    assert sorted(c.task_id for c in claims) == ids[2:]
    assert all(c.last_sequence - c.first_sequence + 1 == ops.SEQUENCE_BLOCK for c in claims)


async def test_an_outcome_is_recorded_once_whoever_races_to_record_it(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    await store.tasks.insert_one(document())
    claim = await documents.claim(TASK, 1, "node-a", 30)
    finishes = [Finish(claim, Ending.DONE, [entry(1001 + i)]) for i in range(5)]
    results = await asyncio.gather(*(documents.finish_many("node-a", [f]) for f in finishes))
    assert sum(ok for [ok] in results) == 1
    intruder = await documents.finish_many("node-b", [Finish(claim, Ending.DONE, [])])
    assert intruder == [False]


async def test_a_stalled_claim_is_taken_over_once_and_counted(store: Store) -> None:
    documents = TaskDocuments(store.tasks, clock=lambda: NOW)
    await store.tasks.insert_one(STATES["stalled"])
    results = await asyncio.gather(
        *(documents.claim(TASK, 1, f"node-{i}", 30) for i in range(10)), return_exceptions=True
    )
    [winner] = [r for r in results if not isinstance(r, BaseException)]
    assert winner.took_over
    state = ExecState.of(await documents.get(TASK) or {})
    assert (state.stalls, state.attempts) == (1, 2)


async def test_a_cancel_racing_a_claim_either_closes_the_task_or_lets_it_run(
    store: Store,
) -> None:
    documents = TaskDocuments(store.tasks)
    for round_ in range(10):
        task_id = f"race-{round_}"
        await store.tasks.insert_one({**document(), "_id": task_id})
        cancel = documents.cancel_if_idle(task_id, entry(5), parent=False)
        claim = documents.claim(task_id, 1, "node-a", 30)
        cancelled, claimed = await asyncio.gather(cancel, claim, return_exceptions=True)
        assert (cancelled is True) == isinstance(claimed, ClaimRefused), (cancelled, claimed)


async def test_sequence_reservations_never_overlap(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    await store.tasks.insert_one(document())
    firsts = await asyncio.gather(*(documents.reserve_sequences(TASK, 10) for _ in range(30)))
    taken = [s for first in firsts for s in range(first, first + 10)]
    assert len(taken) == len(set(taken)) == 300
    assert min(taken) == 2, "sequences continue after the submission's"


async def test_a_replay_raced_six_times_reopens_once(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    await store.tasks.insert_one(STATES["dead"])
    results = await asyncio.gather(
        *(
            documents.reopen_for_replay(
                TASK, 1, entry(8 + i, EventType.REPLAYED), record_id="r", parameters=None
            )
            for i in range(6)
        )
    )
    assert sum(results) == 1
    assert ExecState.of(await documents.get(TASK) or {}).replays == 1


async def test_a_parent_closes_once_whoever_races_to_close_it(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    await store.tasks.insert_one(STATES["awaiting_children"])
    results = await asyncio.gather(
        *(documents.close_parent(TASK, {"total": 1}, entry(9 + i)) for i in range(5))
    )
    assert sum(results) == 1


async def test_of_two_projection_writes_from_one_read_only_the_first_lands(store: Store) -> None:
    documents = TaskDocuments(store.tasks)
    doc = document()
    await store.tasks.insert_one(doc)
    first = ops.write_projection(doc, {"status": "RUNNING"}, [])
    second = ops.write_projection(doc, {"status": "COMPLETED"}, [])
    assert await documents.write_projections([first]) == 1
    assert await documents.write_projections([second]) == 0
    stored = await documents.get(TASK) or {}
    assert (stored["status"], stored["fold_rev"]) == ("RUNNING", 1)


async def test_the_event_log_takes_each_event_once(store: Store) -> None:
    event = TaskEvent(
        event_id=f"{TASK}:1",
        task_id=TASK,
        sequence=1,
        type=EventType.SUBMITTED,
        occurred_at=datetime.now(UTC),
    )
    await store.events.insert_one(event_to_doc(event))
    with pytest.raises(DuplicateKeyError):
        await store.events.insert_one(event_to_doc(event))
    other_id = event_to_doc(event.model_copy(update={"event_id": "another"}))
    with pytest.raises(DuplicateKeyError):  # (task_id, sequence) is unique too
        await store.events.insert_one(other_id)


async def test_racing_relays_claim_a_stale_outbox_once(store: Store) -> None:
    documents = TaskDocuments(store.tasks, clock=lambda: NOW)
    await store.tasks.insert_one(STATES["with_outbox"])
    [doc] = await documents.stale_outboxes(NOW - 1000, 10)
    results = await asyncio.gather(
        *(documents.claim_stale_outbox(TASK, doc["outbox_at_ms"]) for _ in range(5))
    )
    assert sum(results) == 1


# ---- premises the stand-in gets wrong (they hold on MongoDB) --------------------------


@pytest.mark.requires_real_mongo
async def test_a_filter_on_true_does_not_match_a_stored_number(store: Store) -> None:
    # The twin keeps booleans and numbers apart, as MongoDB does; the stand-in reads a
    # $set True back as 1 and matches it against true, so it cannot check the twin here.
    await store.tasks.insert_one({"_id": TASK, "flag": 1})
    assert await store.tasks.count_documents({"_id": TASK, "flag": True}) == 0
    assert not ops.Op({"flag": True}, {}).matches({"flag": 1})


@pytest.mark.requires_real_mongo
async def test_a_datetime_written_by_an_update_compares_as_a_datetime(store: Store) -> None:
    # Why leases and outbox clocks are epoch ms: the stand-in stores a $set datetime as a
    # string that no range query matches. On MongoDB both work; the ms keep them equal.
    at = datetime(2030, 1, 1, tzinfo=UTC)
    await store.tasks.insert_one({"_id": TASK})
    await store.tasks.update_one({"_id": TASK}, {"$set": {"at": at}})
    later = at + timedelta(seconds=1)
    assert await store.tasks.count_documents({"_id": TASK, "at": {"$lt": later}}) == 1
