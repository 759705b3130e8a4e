"""Decoding a batch body item by item, stopping at the item-count cap.

A batch body may be 16 MiB. Decoding all of it before counting its items would let one
request with a million tiny items cost a million objects; here the items are decoded one
at a time with the standard library's ``raw_decode``, and item 1001 ends the decoding
with a 422. (No maintained streaming JSON parser is a dependency of ours; the format
walked here is one object whose ``tasks`` member is an array, which needs only this.)
"""

from __future__ import annotations

import json
from typing import Any

from taskcore_api.errors import ApiError

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def malformed(reason: str) -> ApiError:
    return ApiError(
        400, "malformed_json", "The body is not valid JSON.", [{"field": "body", "reason": reason}]
    )


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(
        422, "validation_failed", "The request is not valid.", [{"field": field, "reason": reason}]
    )


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise malformed(f"expected {char!r} at character {self.pos}")
        self.pos += 1

    def value(self) -> Any:
        self.skip()
        try:
            value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise malformed(f"{exc.msg} at character {exc.pos}") from None
        except RecursionError:
            raise invalid("tasks", "nested too deeply") from None
        return value


def decode_batch(body: bytes, max_items: int) -> list[Any]:
    """The ``tasks`` of a ``{"tasks": [...]}`` body, decoded one by one: a 400 if the body
    is not JSON, a 422 if it is not that shape or has more than ``max_items`` items."""
    try:
        reader = _Reader(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise malformed("the body is not UTF-8") from None
    if reader.peek() != "{":
        reader.value()  # malformed JSON is a 400; any other JSON value is the wrong shape
        raise invalid("body", "must be an object with a `tasks` array")
    reader.expect("{")
    tasks: list[Any] | None = None
    while reader.peek() != "}":
        if reader.peek() != '"':
            raise malformed(f"expected a member name at character {reader.pos}")
        key = reader.value()
        reader.expect(":")
        if key != "tasks":
            reader.value()
            raise invalid(str(key)[:100], "Extra inputs are not permitted")
        if reader.peek() != "[":
            reader.value()
            raise invalid("tasks", "must be an array")
        tasks = _items(reader, max_items)
        if reader.peek() != ",":
            break
        reader.pos += 1
        if reader.peek() != '"':
            raise malformed(f"expected a member name at character {reader.pos}")
    reader.expect("}")
    if reader.peek() != "":
        raise malformed(f"extra data at character {reader.pos}")
    if tasks is None:
        raise invalid("tasks", "Field required")
    if not tasks:
        raise invalid("tasks", "List should have at least 1 item after validation, not 0")
    return tasks


def _items(reader: _Reader, max_items: int) -> list[Any]:
    reader.expect("[")
    items: list[Any] = []
    if reader.peek() == "]":
        reader.pos += 1
        return items
    while True:
        if len(items) == max_items:
            raise invalid("tasks", f"at most {max_items} tasks per batch")
        items.append(reader.value())
        if reader.peek() == "]":
            reader.pos += 1
            return items
        reader.expect(",")
