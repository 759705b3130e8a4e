"""Where a delayed task waits until it may start: pure decisions, no I/O.

A task submitted with ``run_at`` or ``delay_seconds`` must not be dispatched before its
time, and no executor may hold its message meanwhile. It waits in one of two places:

- **a delay queue**, when one of the fixed-TTL retry queues (``tasks.retry.<n>s``) has a
  TTL at or just above the delay: the dispatch is published there at submit, and the
  broker hands it to ``tasks.exchange`` once the TTL has passed (never early: the TTL
  counts from the publish, which follows the submission). No store work at all;
- **the store**, otherwise: the task document carries the due time, and the due-dispatch
  sweep (``taskcore.due_dispatch``) publishes the dispatch when it comes.

A delay queue would be late by its TTL minus the delay; one within ``QUEUE_FIT_S`` of
the delay "fits". Anything else would start far too late through a queue (the next TTL
up from 7 s is 10 s), or too early (the one below), so it waits in the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from taskcore.domain.retry_policy import DELAY_TIERS_S

# The longest delay a submission may ask for (the contract's 30 days).
MAX_DELAY = timedelta(days=30)
# How much later than asked a delay queue may release a task and still be chosen.
QUEUE_FIT_S = 0.25


@dataclass(frozen=True)
class Immediate:
    """Due now (or in the past): dispatch at once."""


@dataclass(frozen=True)
class ViaQueue:
    """Publish the dispatch to the delay queue with this TTL."""

    tier_s: int


@dataclass(frozen=True)
class ViaStore:
    """Keep the due time (epoch ms) on the document; the sweep dispatches it then."""

    due_ms: int


DelayRoute = Immediate | ViaQueue | ViaStore


def route_delay(scheduled_for: datetime | None, now: datetime) -> DelayRoute:
    """Where a task due at ``scheduled_for`` waits, submitted at ``now``."""
    if scheduled_for is None or scheduled_for <= now:
        return Immediate()
    delay_s = (scheduled_for - now).total_seconds()
    fitting = [t for t in DELAY_TIERS_S if 0 <= t - delay_s <= QUEUE_FIT_S]
    if fitting:
        return ViaQueue(fitting[0])
    return ViaStore(math.ceil(scheduled_for.timestamp() * 1000))  # never a moment early
