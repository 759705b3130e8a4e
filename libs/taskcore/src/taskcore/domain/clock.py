"""Time values as the domain keeps them: timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (a store may hand them back naive); aware ones convert."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def to_ms(value: datetime) -> int:
    """Epoch milliseconds: how the store keeps times that queries compare."""
    return int(as_utc(value).timestamp() * 1000)
