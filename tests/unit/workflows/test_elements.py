"""The chunked sequence that holds a for_each step's elements."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from taskcore.workflows.elements import CHUNK, ChunkedTuple


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(st.integers(), max_size=3 * CHUNK),
    changes=st.lists(st.tuples(st.integers(0, 3 * CHUNK), st.integers())),
)
def test_it_behaves_like_a_tuple_under_any_series_of_replacements(
    items: list[int], changes: list[tuple[int, int]]
) -> None:
    model = list(items)
    chunked = ChunkedTuple.of(items)
    for index, value in changes:
        if index < len(model):
            model[index] = value
            chunked = chunked.with_item(index, value)

    assert list(chunked) == model
    assert len(chunked) == len(model)
    assert [chunked[i] for i in range(len(model))] == model
    assert chunked == ChunkedTuple.of(model)


def test_a_replacement_leaves_the_original_unchanged() -> None:
    original = ChunkedTuple.of(range(CHUNK + 5))

    changed = original.with_item(CHUNK + 1, -1)

    assert original[CHUNK + 1] == CHUNK + 1
    assert changed[CHUNK + 1] == -1
    assert changed != original


@pytest.mark.parametrize("index", [-1, 3, 10])
def test_an_index_outside_the_sequence_is_an_index_error(index: int) -> None:
    chunked = ChunkedTuple.of("abc")

    with pytest.raises(IndexError):
        chunked[index]
    with pytest.raises(IndexError):
        chunked.with_item(index, "z")


def test_an_empty_sequence_is_falsy_and_iterates_nothing() -> None:
    assert not ChunkedTuple()
    assert list(ChunkedTuple()) == []
    assert ChunkedTuple() == ChunkedTuple.of([])
