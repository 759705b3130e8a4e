"""What a due schedule does now: pure, so every replica decides the same from the same
schedule document (only one of them then acts, see ``firing``).

A schedule keeps its next due time. When a sweep finds it due (at ``now``):

- the due time to run is the latest one at or before ``now``: the one a schedule that
  fires on time runs, and the last one missed after a pause or an outage;
- it is **on time** if it is at most ``misfire_grace_s`` old, and no older than half the
  time to the due time after it (a run closer to the next one than to its own is late,
  whatever the grace). An on-time due time runs. A late one runs only with
  ``catch_up: one``; with ``none`` it is skipped. Either way at most one task comes out
  of a sweep, however many due times were missed;
- ``overlap: skip`` (decided by the caller, which reads the previous run) creates none
  while the previous run is unfinished;
- the next due time is the first one after ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from taskcore.scheduling.cron import Cron


class Overlap(StrEnum):
    ALLOW = "allow"
    SKIP = "skip"


class CatchUp(StrEnum):
    NONE = "none"
    ONE = "one"


@dataclass(frozen=True)
class Firing:
    due: datetime | None  # the due time to create a task for now (None: none)
    latest: datetime  # the latest due time at or before now, run or not
    next_run: datetime | None  # the first due time after now (None: never again)

    @property
    def missed(self) -> bool:
        return self.due is None


def plan_firing(
    cron: Cron, next_run: datetime, now: datetime, catch_up: CatchUp, misfire_grace_s: float
) -> Firing:
    """What a schedule whose next due time is ``next_run`` (at or before ``now``) does."""
    latest = max(next_run, cron.latest_until(now) or next_run)
    following = cron.next_after(max(latest, now))
    grace = timedelta(seconds=misfire_grace_s)
    after_latest = cron.next_after(latest)
    if after_latest is not None:
        grace = min(grace, (after_latest - latest) / 2)
    on_time = now - latest <= grace
    due = latest if on_time or catch_up is CatchUp.ONE else None
    return Firing(due=due, latest=latest, next_run=following)


def resume_from(
    cron: Cron, next_run: datetime | None, now: datetime, catch_up: CatchUp
) -> datetime | None:
    """The next due time of a schedule resumed at ``now``: with ``catch_up: one`` a due
    time missed while paused stays due (the sweep runs it once); with ``none`` the
    schedule goes on from the first due time after ``now``."""
    if catch_up is CatchUp.ONE and next_run is not None and next_run <= now:
        return next_run
    return cron.next_after(now)
