"""Opaque pagination cursors: the sort key of the last item a page returned.

Clients must treat a cursor as an opaque string; it is base64url JSON only so that it
needs no server-side state.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from taskcore_api.errors import ApiError


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fields: dict[str, type]) -> dict[str, Any]:
    """The position inside ``cursor`` (``fields``: name -> type); a 422 naming ``cursor``
    if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeError):
        position = None
    valid = (
        isinstance(position, dict)
        and set(position) == set(fields)
        and all(type(position[name]) is kind for name, kind in fields.items())
    )
    if not valid:
        raise ApiError(
            422,
            "invalid_cursor",
            "The cursor is not one this API issued.",
            [{"field": "query.cursor", "reason": "not a valid cursor"}],
        )
    assert isinstance(position, dict)
    return position
