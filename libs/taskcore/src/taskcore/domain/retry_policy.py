"""Retry decisions as pure functions: how long to wait, and which delay queue to use."""

from __future__ import annotations

import random
from dataclasses import dataclass

# Fixed-TTL delay tiers, in seconds. A retry goes to the tier closest to its backoff, so
# a message never waits behind a longer one (a TTL queue only expires its head).
DELAY_TIERS_S: tuple[int, ...] = (1, 2, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 3600.0
    multiplier: float = 2.0
    jitter: float = 0.2  # +/- this fraction of the delay

    def next_delay(self, retry_count: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_count + 1`` (0-based retries so far)."""
        try:
            raw = min(self.max_delay_s, self.base_delay_s * self.multiplier**retry_count)
        except OverflowError:  # float power past ~1e308: far beyond any cap
            raw = self.max_delay_s
        if not self.jitter:
            return raw
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        # Capped again after the jitter, so max_delay_s is a true maximum.
        return min(self.max_delay_s, max(0.0, raw * (1 + spread)))

    def should_retry(self, retry_count: int) -> bool:
        """Whether another attempt fits the budget after ``retry_count`` retries so far."""
        return retry_count + 1 < self.max_attempts


def delay_tier(delay_s: float) -> int:
    """The delay queue whose TTL is closest to ``delay_s``."""
    return min(DELAY_TIERS_S, key=lambda tier: (abs(tier - delay_s), tier))


def delay_queue_name(tier_s: int) -> str:
    return f"tasks.retry.{tier_s}s"
