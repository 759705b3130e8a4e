"""Index fields of a task document, derived from its projection, for listing.

``list_key`` orders tasks newest last (``<created ms, zero-padded>:<id>``): one unique
string, so a listing sorts and pages by one indexed field with exact ``$lt`` bounds. (A
sort on ``(created_at, _id)`` would need ``_id`` in a compound index, which the nx-27017
stand-in cannot insert into, and the stand-in compares datetimes only to the second.)

``label_terms`` holds each label as ``"<key>:<value>"``: a multikey index on it (with
``list_key``) serves ``?label=k:v`` filters. Keys cannot contain ``:``, so a term is
unambiguous.

Both are written with the document (``adapters.mongo.task_to_doc``) and never change:
the fold does not rewrite them, and a rebuilt document gets them the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

KEY_DIGITS = 16  # milliseconds up to year 9999 need 15
_MS = timedelta(milliseconds=1)


def epoch_ms(value: datetime) -> int:
    """Exact epoch milliseconds (floored), for any aware datetime, even one whose UTC
    equivalent is past year 9999; a naive one is taken as UTC."""
    offset = value.utcoffset() or timedelta(0)
    naive = value.replace(tzinfo=None) - datetime(1970, 1, 1)
    return (naive - offset) // _MS


def list_key(created_ms: int, task_id: str) -> str:
    return f"{max(0, created_ms):0{KEY_DIGITS}d}:{task_id}"


def time_bound(ms: int) -> str:
    """A key below every key of a task created at ``ms`` or later, and above every key of
    one created before ``ms``."""
    return f"{max(0, ms):0{KEY_DIGITS}d}"


def label_term(key: str, value: str) -> str:
    return f"{key}:{value}"


def label_terms(labels: dict[str, str]) -> list[str]:
    return [label_term(k, v) for k, v in sorted(labels.items())]


def index_fields(task_id: str, created_at: datetime, labels: dict[str, str]) -> dict[str, Any]:
    return {"list_key": list_key(epoch_ms(created_at), task_id), "label_terms": label_terms(labels)}
