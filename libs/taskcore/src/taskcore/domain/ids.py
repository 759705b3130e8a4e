"""Task ids that name the same task every time they are derived: the insert of a task
under such an id dedupes a retried submission, a re-run parent's children and a step a
workflow starts twice."""

from __future__ import annotations

import uuid

_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0f6d55-3f3a-4c8e-9f51-2d1c2a7e0b61")


def idempotent_task_id(scope: str, key: str) -> str:
    """The same (scope, key) always names the same task."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{scope}\x00{key}").hex
