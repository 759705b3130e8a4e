"""Budget windows: the UTC day and the UTC month an instant falls in, and when each ends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Window = Literal["daily", "monthly"]


@dataclass(frozen=True)
class Period:
    """The day and the month of one instant, as budget counters name them."""

    month: str  # "2026-12"
    day: str  # "04", the day within the month
    day_ends: datetime
    month_ends: datetime

    @classmethod
    def of(cls, now: datetime) -> Period:
        now = now.astimezone(UTC)
        day_start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        next_month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return cls(
            month=f"{now.year:04d}-{now.month:02d}",
            day=f"{now.day:02d}",
            day_ends=day_start + timedelta(days=1),
            month_ends=datetime(*next_month, 1, tzinfo=UTC),
        )

    @property
    def month_starts(self) -> datetime:
        year, month = (int(part) for part in self.month.split("-"))
        return datetime(year, month, 1, tzinfo=UTC)

    def ends(self, window: Window) -> datetime:
        return self.day_ends if window == "daily" else self.month_ends
