"""What an action on a dead letter answers: done, done before, in progress, or refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskcore.adapters.mongo import Doc


class DeadLetterNotFound(LookupError):
    pass


class ReplayRefused(Exception):
    """The dead letter cannot be replayed (or discarded) as asked; nothing was changed."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Outcome:
    """``replayed`` / ``discarded``: this call did it; ``already_*``: an earlier call did;
    ``in_progress``: another live caller is doing it now."""

    outcome: str
    record: Doc
