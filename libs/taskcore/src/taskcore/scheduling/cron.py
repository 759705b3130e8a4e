"""Cron expressions in IANA time zones: validating them and finding their due times.

Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
Evaluated by ``cronsim``, chosen over ``croniter`` because it takes the six-field form
with seconds first as it is (our contract's form), its daylight-saving behaviour is
defined (Debian cron's, with tests for it), it is typed and has no dependencies, and it
is maintained.

Daylight saving (``cronsim``'s rules, which we document as ours):
- a job at a fixed time of day (a five-field expression whose minute and hour fields are
  not ``*`` or ``*/n``) whose time falls in the hour skipped in spring runs once, at the
  first moment after the gap (``30 2 * * *`` in Europe/Berlin runs at 03:00 that day);
  whose time falls in the hour repeated in autumn runs once, at its first occurrence;
- every other job follows real time: ``*/15 * * * *`` runs every 15 real minutes, so
  twice through the repeated hour in autumn and never in the skipped one in spring.

Due times are returned in UTC, at whole seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

MAX_EXPRESSION = 200
MAX_TIMEZONE = 64
_TICK = timedelta(microseconds=1)


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be used; ``field`` names which."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Cron:
    expression: str
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """A usable expression in a known zone, or ``InvalidSchedule`` saying why not."""
        cron = cls(_expression(expression), _zone(timezone))
        if cron.next_after(datetime.now(UTC)) is None:
            raise InvalidSchedule("cron", "never matches a date in the next 50 years")
        return cron

    def next_after(self, moment: datetime) -> datetime | None:
        """The first due time strictly after ``moment`` (None: none within 50 years)."""
        try:
            return next(CronSim(self.expression, moment.astimezone(self.zone))).astimezone(UTC)
        except StopIteration:
            return None

    def latest_until(self, moment: datetime) -> datetime | None:
        """The last due time at or before ``moment`` (None: none within 50 years)."""
        # With microseconds cronsim counts stripping them as its first step back, so a
        # due time at exactly ``moment`` (whole seconds) is found too.
        local = moment.astimezone(self.zone)
        if local.microsecond == 0:
            local += _TICK
        try:
            return next(CronSim(self.expression, local, reverse=True)).astimezone(UTC)
        except StopIteration:
            return None


def _expression(expression: str) -> str:
    text = " ".join(expression.split())
    fields = len(text.split(" ")) if text else 0
    if len(expression) > MAX_EXPRESSION or fields not in (5, 6):
        raise InvalidSchedule(
            "cron", "five fields (minute hour day month weekday), or six with seconds first"
        )
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidSchedule("cron", str(exc) or "not a cron expression") from None
    return text


def _zone(name: str) -> ZoneInfo:
    if not name or len(name) > MAX_TIMEZONE:
        raise InvalidSchedule("timezone", "an IANA time zone name, such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule("timezone", f"unknown IANA time zone {name!r}") from None
