"""Properties of ``fold`` over generated event streams of one task.

The aggregator relies on them: redelivery (duplicates), batches cut anywhere (prefixes),
events arriving in any order, and terminal states that late events cannot reopen.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from taskcore.domain.events import EventType, TaskEvent
from taskcore.domain.evolve import evolve, fold
from taskcore.domain.status import TaskStatus, can_transition
from taskcore.domain.task import Task

from .streams import TERMINAL_TYPES, task_streams

# Enough examples to find the short counterexamples that matter, in about a second each.
PROPERTY = settings(max_examples=150, deadline=None)


def _states(stream: list[TaskEvent]) -> list[Task]:
    """The state after each event of a sequence-ordered stream."""
    states: list[Task] = []
    state: Task | None = None
    for event in stream:
        state = evolve(state, event)
        assert state is not None
        states.append(state)
    return states


def _folded(stream: list[TaskEvent]) -> Task:
    state = fold(stream)
    assert state is not None
    return state


@PROPERTY
@given(stream=task_streams())
def test_reapplying_any_folded_event_changes_nothing(stream: list[TaskEvent]) -> None:
    state = _folded(stream)
    for event in stream:
        assert evolve(state, event) == state


@PROPERTY
@given(stream=task_streams(), data=st.data())
def test_a_redelivered_event_anywhere_in_the_stream_changes_nothing(
    stream: list[TaskEvent], data: st.DataObject
) -> None:
    duplicate = data.draw(st.sampled_from(stream))
    position = data.draw(st.integers(0, len(stream)))
    with_duplicate = [*stream[:position], duplicate, *stream[position:]]

    assert fold(with_duplicate) == fold(stream)


@PROPERTY
@given(stream=task_streams(forced=TERMINAL_TYPES))
def test_a_terminal_status_absorbs_every_event_but_a_replay_of_a_dead_letter_and_usage(
    stream: list[TaskEvent],
) -> None:
    states = _states(stream)
    pairs = zip(states, states[1:], stream[1:], strict=False)
    for before, after, event in pairs:
        if not before.status.is_terminal:
            continue
        if event.type is EventType.REPLAYED and before.status is TaskStatus.DEAD_LETTER:
            assert after.status is TaskStatus.QUEUED
            continue
        # Only the version moves (and, for a provider call paid for, the usage): the event
        # is acknowledged as seen, nothing else.
        usage = after.own_usage if event.type is EventType.USAGE_RECORDED else before.own_usage
        assert after == before.model_copy(update={"version": event.sequence, "own_usage": usage})
    assert any(s.status.is_terminal for s in states)


@PROPERTY
@given(stream=task_streams(forced=(EventType.USAGE_RECORDED,)))
def test_usage_counts_every_recorded_call_once_whatever_the_status(
    stream: list[TaskEvent],
) -> None:
    calls = [e for e in stream if e.type is EventType.USAGE_RECORDED]
    usage = _folded(stream).own_usage

    assert usage is not None
    assert usage.calls == len(calls)
    assert usage.cost_nanos == sum(e.data["cost_nanos"] for e in calls)
    assert usage.prompt_tokens == sum(e.data["prompt_tokens"] for e in calls)
    assert sum(p.calls for p in usage.by_provider.values()) == len(calls)


@PROPERTY
@given(stream=task_streams())
def test_every_status_change_is_one_the_state_machine_allows(stream: list[TaskEvent]) -> None:
    states = _states(stream)
    for before, after in pairwise(states):
        assert after.status == before.status or can_transition(before.status, after.status)


@PROPERTY
@given(stream=task_streams(), data=st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_the_whole(
    stream: list[TaskEvent], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(stream)))

    assert fold(stream[cut:], fold(stream[:cut])) == fold(stream)


@PROPERTY
@given(stream=task_streams(), data=st.data())
def test_arrival_order_does_not_matter(stream: list[TaskEvent], data: st.DataObject) -> None:
    arrived = data.draw(st.permutations(stream))

    assert fold(arrived) == fold(stream)


@PROPERTY
@given(stream=task_streams())
def test_version_is_the_highest_sequence_applied(stream: list[TaskEvent]) -> None:
    for applied, state in enumerate(_states(stream), start=1):
        assert state.version == max(e.sequence for e in stream[:applied])


@PROPERTY
@given(stream=task_streams())
def test_attempts_never_go_down(stream: list[TaskEvent]) -> None:
    states = _states(stream)
    for before, after in pairwise(states):
        assert after.attempts >= before.attempts
