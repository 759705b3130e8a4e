"""Replacing references by the values they name, when a step starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from taskcore.workflows.problems import Location, field_path, type_name
from taskcore.workflows.references import (
    LITERAL_KEY,
    MalformedReference,
    ReferencePath,
    is_special,
    reference_in,
)


class _NoItem:
    def __repr__(self) -> str:
        return "NO_ITEM"


# ``resolve``'s default for ``item``: outside a for_each element. A sentinel rather than
# None, because null is a legitimate element of a list.
NO_ITEM: Final = _NoItem()


class UnresolvedReference(LookupError):
    """A reference that names nothing: the step fails with ``error.type`` ReferenceError.

    ``location`` is where the reference sits in the tree given to ``resolve`` and
    ``path`` what it says; the message names both and why it failed.
    """

    def __init__(self, location: Location, path: str, reason: str) -> None:
        self.location = location
        self.path = path
        self.reason = reason
        where = field_path(location) or "(the whole value)"
        super().__init__(f"{where}: {path!r} resolves to nothing: {reason}")


def resolve(tree: Any, results_by_step: Mapping[str, Any], item: Any = NO_ITEM) -> Any:
    """``tree`` with every reference replaced by its value, and every ``$literal`` by its
    content; ``tree`` itself is not changed.

    ``results_by_step`` holds the result of each COMPLETED step (a step without an entry
    has no result yet); ``item`` is the current element of a for_each step. The values
    put in are the results' own objects, not copies: treat the answer as read-only.
    Raises ``UnresolvedReference`` for the first reference (in document order) that
    names nothing: an unknown or unfinished step, a missing key, an index out of range,
    a key into something that is not an object or an index into something not a list.
    """
    return _resolve(tree, (), results_by_step, item)


def lookup(path: ReferencePath, results_by_step: Mapping[str, Any], item: Any = NO_ITEM) -> Any:
    """The value ``path`` names; ``UnresolvedReference`` (located at the root) if none."""
    return _lookup(path, (), results_by_step, item)


def _resolve(node: Any, location: Location, results: Mapping[str, Any], item: Any) -> Any:
    if is_special(node):
        if LITERAL_KEY in node and len(node) == 1:
            return node[LITERAL_KEY]
        try:
            path = reference_in(node)
        except MalformedReference as exc:
            raise UnresolvedReference(location, str(node.get("$ref")), str(exc)) from None
        return _lookup(path, location, results, item)
    if isinstance(node, dict):
        return {k: _resolve(v, (*location, k), results, item) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_resolve(v, (*location, i), results, item) for i, v in enumerate(node)]
    return node


def _lookup(path: ReferencePath, location: Location, results: Mapping[str, Any], item: Any) -> Any:
    if path.step_id is None:
        if item is NO_ITEM:
            raise UnresolvedReference(location, str(path), "'item' exists only in for_each steps")
        value = item
    elif path.step_id in results:
        value = results[path.step_id]
    else:
        raise UnresolvedReference(location, str(path), f"step {path.step_id!r} has no result")
    for depth in range(len(path.segments)):
        value = _follow(value, path, depth, location)
    return value


def _follow(value: Any, path: ReferencePath, depth: int, location: Location) -> Any:
    """One step along ``path``: its segment number ``depth`` applied to ``value``."""
    segment = path.segments[depth]
    if isinstance(segment, int):
        if isinstance(value, list | tuple) and segment < len(value):
            return value[segment]
    elif isinstance(value, dict) and segment in value:
        return value[segment]
    raise UnresolvedReference(location, str(path), _why_not(value, path, depth))


def _why_not(value: Any, path: ReferencePath, depth: int) -> str:
    segment = path.segments[depth]
    here = str(ReferencePath(path.step_id, path.segments[:depth]))
    if isinstance(segment, int):
        if not isinstance(value, list | tuple):
            return f"{here} is {type_name(value)}, not a list"
        return f"index {segment} is out of range: {here} has {len(value)} items"
    if not isinstance(value, dict):
        return f"{here} is {type_name(value)}, not an object"
    return f"{here} has no key {segment!r}"
