"""Evaluating the task-document protocol's filters and updates in memory.

Every conditional operation of the protocol (``taskdoc.operations``) is data: a MongoDB
filter and an update. This module evaluates exactly the subset those use, so each
operation has a pure twin: ``matches(op.filter, doc)`` says whether the store would apply
it, and ``apply(op.update, doc)`` what the document becomes. Unit tests reason about the
protocol through the twins, and the contract suite (tests/contract) checks that a store
agrees with them, operation by operation.

Why hand-written: mongomock and the like emulate a whole server (and disagree with
MongoDB elsewhere); the protocol needs six operators, and a twin must be small enough to
read next to the filters it mirrors.
"""

from __future__ import annotations

import copy
from typing import Any

Doc = dict[str, Any]

_MISSING = object()


class UnsupportedOperator(ValueError):
    """The protocol used an operator this evaluator does not know: extend both together."""


def get_path(doc: Doc, path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def matches(filter_: Doc, doc: Doc) -> bool:
    """Whether ``doc`` matches a filter of equalities and ``$lt $lte $gt $gte $in $exists``,
    and an ``$expr`` comparing one field with a literal."""
    return all(
        _expression(cond, doc) if path == "$expr" else _matches_field(get_path(doc, path), cond)
        for path, cond in filter_.items()
    )


def _expression(expr: Any, doc: Doc) -> bool:
    """``{"$eq": ["$path", {"$literal": value}]}``: the one aggregation expression the
    protocol uses (it compares a whole embedded document, which a plain filter on the
    stand-in cannot)."""
    match expr:
        case {"$eq": [str(path), {"$literal": literal}]} if path.startswith("$"):
            value = get_path(doc, path[1:])
            return value is not _MISSING and _equal(value, literal)
    raise UnsupportedOperator(f"$expr {expr!r}")


def _matches_field(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        return all(_operator(op, value, arg) for op, arg in cond.items())
    return value is not _MISSING and _equal(value, cond)


def _equal(value: Any, expected: Any) -> bool:
    # As MongoDB: a boolean never equals a number (Python says True == 1). The stand-in
    # disagrees (it reads a $set True back as 1 and matches it against true), which the
    # protocol never depends on: it only ever stores and compares booleans as booleans.
    if isinstance(value, bool) != isinstance(expected, bool):
        return False
    return bool(value == expected)


def _operator(op: str, value: Any, arg: Any) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if op == "$in":
        return value is not _MISSING and any(_equal(value, a) for a in arg)
    if value is _MISSING or value is None:
        return False  # a range never matches a missing or null field
    if op == "$lt":
        return bool(value < arg)
    if op == "$lte":
        return bool(value <= arg)
    if op == "$gt":
        return bool(value > arg)
    if op == "$gte":
        return bool(value >= arg)
    raise UnsupportedOperator(op)


def apply(update: Doc, doc: Doc) -> Doc:
    """The document after an update of ``$set $unset $inc $max`` (a new dict)."""
    after = copy.deepcopy(doc)
    for op, fields in update.items():
        for path, arg in fields.items():
            if op == "$set":
                _put(after, path, copy.deepcopy(arg))
            elif op == "$unset":
                _drop(after, path)
            elif op == "$inc":
                current = get_path(after, path)
                _put(after, path, (0 if current is _MISSING else current) + arg)
            elif op == "$max":
                current = get_path(after, path)
                _put(after, path, arg if current is _MISSING else max(current, arg))
            else:
                raise UnsupportedOperator(op)
    return after


def _put(doc: Doc, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def _drop(doc: Doc, path: str) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.get(part, {})
        if not isinstance(doc, dict):
            return
    doc.pop(last, None)
