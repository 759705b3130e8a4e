"""The reference path grammar, and finding references in a parameters tree."""

from __future__ import annotations

import pytest
from taskcore.workflows import MalformedReference, ReferencePath, find_references, parse_reference
from taskcore.workflows.references import BadReference, Reference, scan_references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("parse.result", ReferencePath("parse", ())),
        ("parse.result.chapters[0].text", ReferencePath("parse", ("chapters", 0, "text"))),
        ("split.result[12]", ReferencePath("split", (12,))),
        ("a-b_C9.result[0][1]", ReferencePath("a-b_C9", (0, 1))),
        ("item", ReferencePath(None, ())),
        ("item.title", ReferencePath(None, ("title",))),
        ("item[2].x", ReferencePath(None, (2, "x"))),
        ("item.result", ReferencePath(None, ("result",))),
        ("items.result", ReferencePath("items", ())),
        ("p.result.0", ReferencePath("p", ("0",))),
        ("p.result.$defs.café", ReferencePath("p", ("$defs", "café"))),
    ],
)
def test_a_well_formed_path_parses_to_its_root_and_segments(
    text: str, expected: ReferencePath
) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "parse.result.chapters[0].text",
        "item[2].x",
        "items.result",
        "s.result[10][0]",
    ],
)
def test_a_parsed_path_prints_back_as_written(text: str) -> None:
    assert str(parse_reference(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "does not start with '<step id>.result' or 'item'"),
        ("parse", "does not start with '<step id>.result'"),
        ("parse.output", "does not start with '<step id>.result'"),
        ("parse.results", "does not start with '<step id>.result'"),
        ("pa rse.result", "does not start with"),
        ("parse.result.", "malformed at character 13"),
        ("parse.result[01]", "malformed at character 13"),
        ("parse.result[-1]", "malformed at character 13"),
        ("parse.result[x]", "malformed at character 13"),
        ("parse.result..a", "malformed at character 13"),
        ("parse.result.a b", "malformed at character 15"),
        ("item-", "does not start with"),
        ("itemx", "does not start with"),
        ("x" * 65 + ".result", "does not start with"),
        ("a.result" + ".k" * 600, "at most 1000 characters"),
    ],
)
def test_a_malformed_path_is_refused_saying_where_and_why(text: str, why: str) -> None:
    with pytest.raises(MalformedReference) as raised:
        parse_reference(text)

    assert why in str(raised.value)


def test_find_references_gives_every_reference_with_its_location_in_document_order() -> None:
    parameters = {
        "title": {"$ref": "parse.result.title"},
        "messages": [
            {"role": "system", "content": "Summarise."},
            {"role": "user", "content": {"$ref": "item.text"}},
        ],
        "nested": {"deeper": [[{"$ref": "a.result[0]"}]]},
        "plain": {"ref": "not a reference"},
    }

    found = find_references(parameters)

    assert found == [
        Reference(("title",), ReferencePath("parse", ("title",))),
        Reference(("messages", 1, "content"), ReferencePath(None, ("text",))),
        Reference(("nested", "deeper", 0, 0), ReferencePath("a", (0,))),
    ]


def test_parameters_that_are_one_reference_are_found_at_the_root() -> None:
    assert find_references({"$ref": "a.result"}) == [Reference((), ReferencePath("a", ()))]


def test_nothing_inside_a_literal_is_taken_for_a_reference() -> None:
    parameters = {
        "json_schema": {"$literal": {"items": {"$ref": "#/$defs/Chapter"}}},
        "text": {"$ref": "a.result"},
    }

    assert find_references(parameters) == [Reference(("text",), ReferencePath("a", ()))]


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        ({"$ref": "a.result", "default": 1}, "has only the key '$ref' (also: 'default')"),
        ({"$ref": 3}, "'$ref' must be a path string, got a number"),
        ({"$ref": None}, "'$ref' must be a path string, got null"),
        ({"$ref": "#/$defs/X"}, "does not start with '<step id>.result' or 'item'"),
        ({"$literal": 1, "other": 2}, "a '$literal' object has only that key"),
        ({"$ref": "a.result", "$literal": 2}, "has only that key"),
    ],
)
def test_a_reference_object_that_cannot_be_used_is_reported_at_its_location(
    obj: dict[str, object], why: str
) -> None:
    found = scan_references({"x": [obj]})

    assert len(found) == 1
    assert isinstance(found[0], BadReference)
    assert found[0].location == ("x", 0)
    assert why in found[0].reason


def test_find_references_refuses_the_first_bad_reference_naming_its_field() -> None:
    with pytest.raises(MalformedReference, match=r"^x\[0\]: a reference object has only"):
        find_references({"x": [{"$ref": "a.result", "y": 1}]})
