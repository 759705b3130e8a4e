"""What a client's JSON value must be for the store and the broker to take it.

JSON allows more than BSON and our messages do: integers past 64 bits (BSON cannot hold
them), ``NaN`` and infinities (Python's parser accepts them), lone UTF-16 surrogates
(not encodable as UTF-8), NUL in keys (BSON's keys are C strings), and nesting deeper
than MongoDB's 100 levels once the value sits inside a task document. Each is a 422
naming the field here, instead of a 500 from the driver later.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32  # inside a task document's outbox entry a value sits ~5 levels down
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_PROBLEMS = 10


def problems(value: Any, field: str) -> list[dict[str, str]]:
    """Why ``value`` cannot be stored, as ``{field, reason}`` details (empty: it can).

    Iterative, so no nesting depth can exhaust the interpreter's stack.
    """
    found: list[dict[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack and len(found) < _MAX_PROBLEMS:
        item, path, depth = stack.pop()
        reason = _scalar_problem(item)
        if reason:
            found.append({"field": path, "reason": reason})
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                found.append({"field": path, "reason": f"nested deeper than {MAX_DEPTH} levels"})
                continue
            if isinstance(item, dict):
                for key, child in item.items():
                    key_reason = _key_problem(key)
                    if key_reason:
                        found.append({"field": path, "reason": key_reason})
                    stack.append((child, f"{path}.{_printable(key)}", depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
    return found


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
        return "integers must fit in 64 bits"
    if isinstance(item, float) and not math.isfinite(item):
        return "numbers must be finite"
    if isinstance(item, str) and not _encodable(item):
        return "not valid Unicode text (a lone surrogate)"
    return None


def _key_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return "keys must be strings"
    if "\x00" in key:
        return "keys must not contain the NUL character"
    if not _encodable(key):
        return "a key is not valid Unicode text (a lone surrogate)"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(key: Any) -> str:
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")[:100]
