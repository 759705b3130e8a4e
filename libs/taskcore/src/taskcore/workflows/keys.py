"""Stable keys of a workflow's step tasks: ``step:<id>`` and ``step:<id>:<element>``.

Step ids contain no ":" (``STEP_ID_PATTERN``), so a key reads back unambiguously.
"""

from __future__ import annotations


def step_key(step_id: str, element: int | None = None) -> str:
    """The stable key of a step's task (``step:<id>``) or of a for_each element's
    (``step:<id>:<n>``): derive child task ids from it (``idempotent_task_id``), so a
    start ordered twice creates each task once."""
    return f"step:{step_id}" if element is None else f"step:{step_id}:{element}"


def parse_step_key(key: str) -> tuple[str, int | None] | None:
    """``(step id, element or None)`` from a ``step_key``; None for any other string."""
    parts = key.split(":")
    if parts[0] != "step" or len(parts) not in (2, 3) or not parts[1]:
        return None
    if len(parts) == 2:
        return parts[1], None
    number = parts[2]
    return (parts[1], int(number)) if number.isascii() and number.isdigit() else None
