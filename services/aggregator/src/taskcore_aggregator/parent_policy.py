"""How a parent ends once no child is open: pure, by its policy.

- a cancelled parent (``cancel_requested``) ends ``CANCELLED``, whatever its children did;
- every child completed: ``COMPLETED``;
- ``collect_all``: ``COMPLETED_WITH_ERRORS`` if any child did not complete;
- ``fail_fast``: ``FAILED`` if any child did not complete (the executor has already
  cancelled the open siblings of the first failure);
- ``threshold``: ``FAILED`` when the share of children that did not complete exceeds the
  type's ``failure_threshold``, else ``COMPLETED_WITH_ERRORS``.

"Did not complete" is failed, cancelled or dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskcore.domain.events import EventType
from taskcore.domain.task import SubtaskCounts

DEFAULT_FAILURE_THRESHOLD = 0.5  # TaskType.failure_threshold's default


@dataclass(frozen=True)
class ParentOutcome:
    type: EventType
    error: dict[str, Any] | None = None


def parent_outcome(
    policy: str,
    counts: SubtaskCounts,
    *,
    cancelled: bool = False,
    failure_threshold: float = DEFAULT_FAILURE_THRESHOLD,
) -> ParentOutcome:
    if cancelled:
        return ParentOutcome(EventType.CANCELLED)
    if counts.unsuccessful == 0:
        return ParentOutcome(EventType.COMPLETED)
    if policy == "fail_fast":
        return ParentOutcome(EventType.FAILED, _error(counts, "fail_fast"))
    if policy == "threshold":
        share = counts.unsuccessful / counts.total if counts.total else 0.0
        if share > failure_threshold:
            return ParentOutcome(
                EventType.FAILED, _error(counts, f"above the threshold {failure_threshold:g}")
            )
    return ParentOutcome(EventType.COMPLETED_WITH_ERRORS, _error(counts, policy))


def _error(counts: SubtaskCounts, why: str) -> dict[str, Any]:
    return {
        "type": "SubtasksFailed",
        "message": (
            f"{counts.unsuccessful} of {counts.total} subtasks did not complete "
            f"(failed {counts.failed}, cancelled {counts.cancelled}, "
            f"dead-lettered {counts.dead_letter}); {why}"
        ),
        "retryable": False,
    }
