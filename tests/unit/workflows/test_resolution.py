"""Resolving references: every reference replaced by its value, or a clear refusal."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from taskcore.workflows import UnresolvedReference, field_path, lookup, parse_reference, resolve

RESULTS: dict[str, Any] = {
    "parse": {"title": "Dune", "chapters": [{"text": "one"}, {"text": "two"}], "n": None},
    "count": 3,
    "empty": None,
}


def test_references_are_replaced_at_any_depth_and_the_rest_is_kept() -> None:
    parameters = {
        "title": {"$ref": "parse.result.title"},
        "messages": [{"role": "user", "content": {"$ref": "parse.result.chapters[1].text"}}],
        "all": {"$ref": "parse.result.chapters"},
        "n": {"$ref": "count.result"},
        "plain": [1, "two", {"three": 3}],
    }

    resolved = resolve(parameters, RESULTS)

    assert resolved == {
        "title": "Dune",
        "messages": [{"role": "user", "content": "two"}],
        "all": [{"text": "one"}, {"text": "two"}],
        "n": 3,
        "plain": [1, "two", {"three": 3}],
    }


def test_resolving_leaves_the_parameters_themselves_unchanged() -> None:
    parameters = {"a": [{"$ref": "count.result"}], "b": {"c": {"$ref": "parse.result.title"}}}
    before = copy.deepcopy(parameters)

    resolve(parameters, RESULTS)

    assert parameters == before


def test_a_null_result_or_value_is_a_value_not_a_missing_one() -> None:
    assert resolve({"x": {"$ref": "empty.result"}}, RESULTS) == {"x": None}
    assert resolve({"x": {"$ref": "parse.result.n"}}, RESULTS) == {"x": None}


def test_parameters_that_are_one_reference_become_its_value() -> None:
    assert resolve({"$ref": "parse.result.chapters[0]"}, RESULTS) == {"text": "one"}


def test_item_references_take_the_current_element_even_when_it_is_null() -> None:
    parameters = {"text": {"$ref": "item.text"}, "whole": {"$ref": "item"}}

    assert resolve(parameters, RESULTS, item={"text": "x"}) == {
        "text": "x",
        "whole": {"text": "x"},
    }
    assert resolve({"whole": {"$ref": "item"}}, RESULTS, item=None) == {"whole": None}


def test_a_literal_is_passed_through_verbatim_without_resolving_inside() -> None:
    schema = {"type": "object", "items": {"$ref": "#/$defs/Chapter"}}
    parameters = {"json_schema": {"$literal": schema}, "n": {"$ref": "count.result"}}

    assert resolve(parameters, RESULTS) == {"json_schema": schema, "n": 3}


@pytest.mark.parametrize(
    ("parameters", "field", "path", "reason"),
    [
        (
            {"t": {"$ref": "parse.result.missing"}},
            ("t",),
            "parse.result.missing",
            "parse.result has no key 'missing'",
        ),
        (
            {"x": [1, {"t": {"$ref": "parse.result.chapters[2].text"}}]},
            ("x", 1, "t"),
            "parse.result.chapters[2].text",
            "index 2 is out of range: parse.result.chapters has 2 items",
        ),
        (
            {"t": {"$ref": "parse.result.title[0]"}},
            ("t",),
            "parse.result.title[0]",
            "parse.result.title is a string, not a list",
        ),
        (
            {"t": {"$ref": "parse.result.chapters.text"}},
            ("t",),
            "parse.result.chapters.text",
            "parse.result.chapters is a list, not an object",
        ),
        (
            {"t": {"$ref": "empty.result.x"}},
            ("t",),
            "empty.result.x",
            "empty.result is null, not an object",
        ),
        (
            {"t": {"$ref": "later.result"}},
            ("t",),
            "later.result",
            "step 'later' has no result",
        ),
        (
            {"t": {"$ref": "item.text"}},
            ("t",),
            "item.text",
            "'item' exists only in for_each steps",
        ),
    ],
)
def test_a_reference_to_nothing_is_refused_with_its_location_path_and_reason(
    parameters: dict[str, Any], field: tuple[Any, ...], path: str, reason: str
) -> None:
    with pytest.raises(UnresolvedReference) as raised:
        resolve(parameters, RESULTS)

    error = raised.value
    assert (error.location, error.path, error.reason) == (field, path, reason)
    assert str(error) == f"{field_path(field)}: {path!r} resolves to nothing: {reason}"


def test_the_refusal_names_the_field_as_the_contract_writes_field_paths() -> None:
    with pytest.raises(UnresolvedReference, match=r"^x\[1\]\.t: 'parse.result.n.k' resolves"):
        resolve({"x": [0, {"t": {"$ref": "parse.result.n.k"}}]}, RESULTS)


def test_the_first_unresolvable_reference_in_document_order_is_the_one_reported() -> None:
    parameters = {
        "a": {"$ref": "count.result"},
        "b": {"$ref": "x.result"},
        "c": {"$ref": "y.result"},
    }

    with pytest.raises(UnresolvedReference) as raised:
        resolve(parameters, RESULTS)

    assert raised.value.location == ("b",)


def test_lookup_follows_one_parsed_path() -> None:
    path = parse_reference("parse.result.chapters[0].text")

    assert lookup(path, RESULTS) == "one"
