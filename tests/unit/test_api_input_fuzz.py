"""Fuzzing the API's decoders of client input with hypothesis: cursors, dates, numbers,
nested parameters, batch bodies and label filters. Each either yields a value the store
and the broker accept, or refuses with a 4xx ApiError; nothing else escapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import bson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from taskcore.listing import KEY_DIGITS, epoch_ms
from taskcore_api import storable
from taskcore_api.batch_body import decode_batch
from taskcore_api.errors import ApiError
from taskcore_api.handlers.queries import (
    TaskFilters,
    _decode_event_cursor,
    _decode_list_cursor,
    _key_range,
)
from taskcore_api.labels import parse_label_filters

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()  # includes lone surrogates and NUL
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


def outcome(decode: Any, *args: Any, **kwargs: Any) -> Any:
    """What ``decode`` returns, or the ApiError it refuses with."""
    try:
        return decode(*args, **kwargs)
    except ApiError as exc:
        return exc


def deep(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def encoded(position: Any) -> str:
    raw = json.dumps(position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@FUZZ
@given(st.text(max_size=600) | json_like.map(encoded))
def test_any_cursor_decodes_to_a_position_or_a_422(cursor: str) -> None:
    for decode in (_decode_list_cursor, _decode_event_cursor):
        position = outcome(decode, cursor)
        if isinstance(position, ApiError):
            assert position.status == 422
            assert position.details[0]["field"] == "query.cursor"
        elif isinstance(position, int):
            assert 0 <= position < 2**62
            bson.encode({"sequence": {"$gt": position}})
        else:
            assert position[:KEY_DIGITS].isdigit()
            bson.encode({"list_key": {"$lt": position}})


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@FUZZ
@given(
    st.datetimes(timezones=offsets | st.none()),
    st.datetimes(timezones=offsets | st.none()),
)
def test_any_pair_of_created_bounds_becomes_well_formed_key_bounds(
    after: datetime, before: datetime
) -> None:
    bounds = _key_range(TaskFilters(created_after=after, created_before=before), None)
    for key in bounds.values():
        assert key == "~" or (len(key) == KEY_DIGITS and key.isdigit())
    bson.encode({"list_key": bounds})
    # exact to the millisecond: a task created at T ms is inside iff after < T < before
    created = datetime(2026, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
    key = f"{epoch_ms(created):0{KEY_DIGITS}d}:id"
    inside = bounds.get("$gte", "") <= key < bounds["$lt"]
    expected = _as_utc(after) < created < _as_utc(before)
    assert inside == expected


def _as_utc(value: datetime) -> datetime:
    base = datetime(1970, 1, 1, tzinfo=UTC)
    return (
        base
        + timedelta(milliseconds=epoch_ms(value))
        + timedelta(microseconds=value.microsecond % 1000)
    )


@FUZZ
@given(json_like)
def test_a_value_without_problems_is_storable_inside_a_task_document(value: Any) -> None:
    problems = storable.problems(value, "parameters")
    assert all(set(p) == {"field", "reason"} for p in problems)
    if not problems:
        # as deep as the outbox entry that carries it, and as JSON for the broker
        bson.encode({"outbox": {"e": {"event": {"data": {"parameters": value}}}}})
        json.dumps(value, allow_nan=False).encode("utf-8")


def test_nesting_past_the_limit_is_a_problem_at_any_depth_without_recursion() -> None:
    assert storable.problems(deep(storable.MAX_DEPTH), "p") == []
    for depth in (storable.MAX_DEPTH + 1, 100_000):
        [problem] = storable.problems(deep(depth), "p")
        assert "nested deeper" in problem["reason"]


@FUZZ
@given(st.binary(max_size=300) | json_like.map(lambda v: json.dumps({"tasks": v}).encode()))
def test_any_batch_body_decodes_to_items_or_a_400_or_422(body: bytes) -> None:
    items = outcome(decode_batch, body, max_items=5)
    if isinstance(items, ApiError):
        assert items.status in (400, 422)
        return
    assert 1 <= len(items) <= 5
    assert items == json.loads(body)["tasks"]


@FUZZ
@given(st.lists(st.text(max_size=300), max_size=5))
def test_any_label_filter_is_terms_or_a_422(raw: list[str]) -> None:
    terms = outcome(parse_label_filters, raw)
    if isinstance(terms, ApiError):
        assert terms.status == 422
        return
    for term in terms:
        key, _, value = term.partition(":")
        assert key
        assert len(value) <= 256
