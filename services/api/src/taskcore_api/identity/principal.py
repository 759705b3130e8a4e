"""The caller, whatever credential it presented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Via = Literal["api_key", "jwt", "stream_token"]


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str = "user"
    tier: str = "paid"
    teams: frozenset[str] = field(default_factory=frozenset)
    via: Via = "api_key"
    # A stream token opens one task's stream and nothing else.
    stream_task_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
