"""Bounds on what one submission can grow into: children per task, tasks under one root,
levels of nesting, and the size of a result.

A submission that asks for more than these is refused (422, where the type can say how
many children it will create: ``TaskType.planned_children``); a running task whose
subtasks would pass them fails with the non-retryable ``TreeLimitExceeded``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taskcore.plugin import NonRetryableError
from taskcore.settings import Settings


class TreeLimitExceeded(NonRetryableError):
    """Creating these subtasks would pass a tree limit."""


class ResultTooLarge(NonRetryableError):
    """The result serialises larger than TASKCORE_MAX_RESULT_BYTES."""


@dataclass(frozen=True)
class TreeLimits:
    max_children: int = 10_000  # children of one task
    max_descendants: int = 20_000  # tasks under one root
    max_depth: int = 8  # levels below a root

    @classmethod
    def from_settings(cls, settings: Settings) -> TreeLimits:
        return cls(settings.max_children, settings.max_descendants, settings.max_depth)

    def check(self, *, depth: int, children: int, descendants: int) -> None:
        """Raise ``TreeLimitExceeded`` if a tree at these numbers is over a limit
        (``depth``: of the new children; the counts: once they exist)."""
        if depth > self.max_depth:
            raise TreeLimitExceeded(
                f"subtasks at depth {depth}: deeper than TASKCORE_MAX_DEPTH ({self.max_depth})"
            )
        if children > self.max_children:
            raise TreeLimitExceeded(
                f"{children} children: more than TASKCORE_MAX_CHILDREN ({self.max_children})"
            )
        if descendants > self.max_descendants:
            raise TreeLimitExceeded(
                f"{descendants} tasks under one root: more than TASKCORE_MAX_DESCENDANTS "
                f"({self.max_descendants})"
            )


def check_result_size(result: Any, max_bytes: int) -> None:
    """Raise ``ResultTooLarge`` if ``result`` (JSON-ready) serialises larger than that."""
    size = len(json.dumps(result, separators=(",", ":"), default=str).encode())
    if size > max_bytes:
        raise ResultTooLarge(
            f"the result is {size} bytes: more than TASKCORE_MAX_RESULT_BYTES ({max_bytes})"
        )
