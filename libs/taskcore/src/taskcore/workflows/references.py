"""References between steps: ``{"$ref": "<path>"}`` objects and their path grammar.

Grammar (hand-written: it is five lines, and no JSONPath library parses exactly this)::

    path    := root segment*
    root    := STEP_ID ".result"      the result of an upstream step
             | "item"                 the current element, in a for_each step only
    segment := "." KEY                a key of an object; KEY is one or more characters
                                      other than ".", "[", "]" and whitespace
             | "[" INDEX "]"          a position in a list, 0-based, no sign or leading 0

e.g. ``parse.result.chapters[0].text``, ``item.title``, ``split.result[3]``.

Reference objects: a JSON object with the key ``"$ref"`` is a reference wherever it sits
inside a step's parameters (nested objects and lists included). It must have no other
key: ``{"$ref": "a.result", "default": 1}`` is refused at submit rather than guessed at.

Literals: because JSON Schemas (``llm.structured``'s ``json_schema``) use ``"$ref"`` for
their own purpose, ``{"$literal": <value>}`` passes ``<value>`` through verbatim,
references and all: ``{"$literal": {"$ref": "#/$defs/Chapter"}}`` becomes
``{"$ref": "#/$defs/Chapter"}``. It too must be the object's only key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from taskcore.workflows.problems import Location, field_path, type_name
from taskcore.workflows.submission import STEP_ID_PATTERN

REF_KEY = "$ref"
LITERAL_KEY = "$literal"
ITEM_ROOT = "item"
MAX_PATH_LENGTH = 1000

_STEP_ID = STEP_ID_PATTERN.strip("^$")
_ROOT = re.compile(
    rf"(?:(?P<item>{ITEM_ROOT})(?![A-Za-z0-9_-])|(?P<step>{_STEP_ID})\.result(?=[.\[]|$))"
)
_SEGMENT = re.compile(r"\.(?P<key>[^.\[\]\s]+)|\[(?P<index>0|[1-9][0-9]*)\]")


class MalformedReference(ValueError):
    """A ``$ref`` path that does not follow the grammar; the message says where and why."""


@dataclass(frozen=True)
class ReferencePath:
    """A parsed path: where to start (an upstream step's result, or the for_each item)
    and the keys (``str``) and list indexes (``int``) to follow from there."""

    step_id: str | None  # None: the for_each item
    segments: tuple[str | int, ...] = ()

    @property
    def is_item(self) -> bool:
        return self.step_id is None

    def __str__(self) -> str:
        root = ITEM_ROOT if self.step_id is None else f"{self.step_id}.result"
        rest = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.segments)
        return root + rest


def parse_reference(text: str) -> ReferencePath:
    """The path ``text`` names; ``MalformedReference`` says what is wrong with it."""
    if len(text) > MAX_PATH_LENGTH:
        raise MalformedReference(f"a path has at most {MAX_PATH_LENGTH} characters")
    root = _ROOT.match(text)
    if root is None:
        raise MalformedReference(
            f"{text!r} does not start with '<step id>.result' or 'item' "
            "(e.g. 'parse.result.chapters[0]')"
        )
    segments: list[str | int] = []
    position = root.end()
    while position < len(text):
        segment = _SEGMENT.match(text, position)
        if segment is None:
            raise MalformedReference(
                f"{text!r} is malformed at character {position + 1}: expected '.<key>' or "
                "'[<index>]' (a key has no '.', '[', ']' or spaces; an index is 0, 1, 2...)"
            )
        key, index = segment.group("key"), segment.group("index")
        segments.append(int(index) if index is not None else key)
        position = segment.end()
    return ReferencePath(root.group("step"), tuple(segments))


@dataclass(frozen=True)
class Reference:
    """A well-formed reference found in a parameters tree, at ``location`` within it."""

    location: Location
    path: ReferencePath


@dataclass(frozen=True)
class BadReference:
    """A ``$ref`` (or ``$literal``) object that cannot be used, and why."""

    location: Location
    reason: str


def reference_in(value: Any) -> ReferencePath:
    """The path of a reference object (``{"$ref": "<path>"}``), or ``MalformedReference``."""
    if not isinstance(value, dict) or REF_KEY not in value:
        raise MalformedReference(
            f'expected a reference {{"$ref": "<path>"}}, got {type_name(value)}'
        )
    if len(value) > 1:
        others = ", ".join(sorted(repr(k) for k in value if k != REF_KEY))
        raise MalformedReference(f"a reference object has only the key '$ref' (also: {others})")
    text = value[REF_KEY]
    if not isinstance(text, str):
        raise MalformedReference(f"'$ref' must be a path string, got {type_name(text)}")
    return parse_reference(text)


def scan_references(tree: Any) -> list[Reference | BadReference]:
    """Every reference object in ``tree``, usable or not, in document order.

    Locations are relative to ``tree`` (``()`` when ``tree`` itself is a reference).
    Nothing inside a ``$literal`` is looked at.
    """
    found: list[Reference | BadReference] = []
    for location, node in _special_objects(tree, ()):
        if LITERAL_KEY in node:
            if len(node) > 1:
                found.append(BadReference(location, "a '$literal' object has only that key"))
            continue
        try:
            found.append(Reference(location, reference_in(node)))
        except MalformedReference as exc:
            found.append(BadReference(location, str(exc)))
    return found


def find_references(tree: Any) -> list[Reference]:
    """Every reference in ``tree`` with its location; ``MalformedReference`` on the first
    that cannot be used (its message starts with the location)."""
    found = scan_references(tree)
    for entry in found:
        if isinstance(entry, BadReference):
            where = field_path(entry.location) or "(root)"
            raise MalformedReference(f"{where}: {entry.reason}")
    return [entry for entry in found if isinstance(entry, Reference)]


def is_special(node: Any) -> bool:
    """Whether ``node`` is a reference or a literal object rather than plain data."""
    return isinstance(node, dict) and (REF_KEY in node or LITERAL_KEY in node)


def _special_objects(node: Any, location: Location) -> Iterator[tuple[Location, dict[str, Any]]]:
    if is_special(node):
        yield location, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _special_objects(child, (*location, key))
    elif isinstance(node, list | tuple):
        for index, child in enumerate(node):
            yield from _special_objects(child, (*location, index))
