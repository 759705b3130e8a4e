"""Builders and hypothesis strategies for one task's event stream.

Payloads are the shapes our producers emit, so the fold accepts every generated event.
Sequences start at 1 (the submission) and grow with gaps, as reserved blocks make them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from taskcore.domain.events import EventType, TaskEvent, event_id_for

TASK_ID = "t-0001"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

FOLLOW_UP_TYPES: tuple[EventType, ...] = tuple(t for t in EventType if t is not EventType.SUBMITTED)
TERMINAL_TYPES: tuple[EventType, ...] = (
    EventType.COMPLETED,
    EventType.COMPLETED_WITH_ERRORS,
    EventType.FAILED,
    EventType.CANCELLED,
    EventType.DEAD_LETTERED,
)


def at(sequence: int) -> datetime:
    """A distinct, increasing time per sequence, so time fields show which event set them."""
    return T0 + timedelta(seconds=sequence)


def event(
    type_: EventType, sequence: int, data: dict[str, Any] | None = None, **fields: Any
) -> TaskEvent:
    return TaskEvent(
        event_id=event_id_for(TASK_ID, sequence),
        task_id=TASK_ID,
        sequence=sequence,
        type=type_,
        occurred_at=at(sequence),
        data=data or {},
        **fields,
    )


def submitted(**data: Any) -> TaskEvent:
    return event(EventType.SUBMITTED, 1, {"user_id": "alice", "task_type": "diag.noop", **data})


def error_data(message: str = "boom", *, retryable: bool = True) -> dict[str, Any]:
    return {"type": "RuntimeError", "message": message, "retryable": retryable}


def usage_data(
    provider: str = "openai",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cost_nanos: int = 7,
) -> dict[str, Any]:
    """One provider call, as the executor records it."""
    return {
        "provider": provider,
        "model": f"{provider}-model",
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_nanos": cost_nanos,
        "currency": "USD",
        "user_id": "alice",
        "team_id": None,
        "task_type": "llm.chat",
        "tier": "paid",
        "attempt": 1,
    }


_json_scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_errors = st.builds(error_data, st.text(min_size=1, max_size=12), retryable=st.booleans())
_progress = st.fixed_dictionaries({"done": st.integers(0, 100), "total": st.just(100)})


def payloads(type_: EventType) -> st.SearchStrategy[dict[str, Any]]:
    """Data an event of ``type_`` carries, as our producers write it."""
    match type_:
        case EventType.STARTED:
            return st.fixed_dictionaries({"node_id": st.sampled_from(["node-a", "node-b"])})
        case EventType.PROGRESS:
            return st.fixed_dictionaries({"progress": _progress})
        case EventType.RETRYING:
            return st.fixed_dictionaries(
                {
                    "retry_count": st.integers(1, 5),
                    "error": _errors,
                    "next_attempt_at": st.integers(1, 3600).map(
                        lambda s: (T0 + timedelta(days=1, seconds=s)).isoformat()
                    ),
                }
            )
        case EventType.AWAITING_CHILDREN:
            return st.fixed_dictionaries({}, optional={"result": _json_values})
        case EventType.COMPLETED | EventType.COMPLETED_WITH_ERRORS:
            return st.fixed_dictionaries({"result": _json_values}, optional={"progress": _progress})
        case EventType.FAILED:
            return st.fixed_dictionaries({"error": _errors})
        case EventType.DEAD_LETTERED:
            return st.fixed_dictionaries(
                {"error": _errors, "dead_letter_id": st.uuids().map(lambda u: u.hex)},
                optional={"retry_count": st.integers(0, 5)},
            )
        case EventType.USAGE_RECORDED:
            return st.builds(
                usage_data,
                provider=st.sampled_from(["openai", "offline"]),
                prompt_tokens=st.integers(0, 500),
                completion_tokens=st.integers(0, 500),
                cost_nanos=st.integers(0, 10**6),
            )
        case EventType.REPLAYED:
            return st.fixed_dictionaries(
                {}, optional={"parameters": st.dictionaries(st.text(max_size=4), _json_scalars)}
            )
        case _:
            return st.just({})


@st.composite
def task_streams(
    draw: st.DrawFn, *, max_follow_ups: int = 12, forced: tuple[EventType, ...] = ()
) -> list[TaskEvent]:
    """A submission, then follow-up events in sequence order.

    ``forced``: one event of one of these types is spliced in at a random place, so a
    property about (say) terminal events is exercised in every example.
    """
    types = draw(st.lists(st.sampled_from(FOLLOW_UP_TYPES), max_size=max_follow_ups))
    if forced:
        index = draw(st.integers(0, len(types)))
        types.insert(index, draw(st.sampled_from(forced)))
    events = [submitted(max_attempts=draw(st.integers(1, 5)))]
    sequence = 1
    for type_ in types:
        sequence += draw(st.integers(1, 1000))
        events.append(event(type_, sequence, draw(payloads(type_))))
    return events
