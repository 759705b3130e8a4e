"""The aggregator's own settings, read once from the environment (``TASKCORE_*``).

The shared ``taskcore.settings.Settings`` carries what every service reads (broker, store,
``fold_batch_size``, ``fold_flush_ms``); these knobs concern the aggregator alone.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

WEEK_S = 7 * 24 * 3600.0


class AggregatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKCORE_", extra="ignore")

    # How long progress events stay in the log; lifecycle events are kept forever.
    progress_retention_seconds: float = Field(default=WEEK_S, gt=0)
    # The shortest gap between two recounts of one parent's children (the debounce).
    parent_recount_interval_seconds: float = Field(default=0.25, ge=0)
    # How often the watchdog looks for parents left open or with stale counters.
    watchdog_interval_seconds: float = Field(default=5.0, gt=0)
    # A counter mark older than this, not yet recounted, is the watchdog's to recount.
    watchdog_stale_seconds: float = Field(default=10.0, ge=0)
    # Committed events per hand-off message to the event bridge.
    handoff_chunk: int = Field(default=500, ge=1)
    # Task documents remembered after a fold, so the next events of the same tasks fold
    # without reading them again (0: read every time).
    fold_cache_size: int = Field(default=10_000, ge=0)
    # How long a folded event's outbox entry may wait for its task's next projection
    # write before it is cleared on its own (well under the relay's re-send age).
    outbox_clear_delay_seconds: float = Field(default=1.0, ge=0, le=10)

    @property
    def progress_retention(self) -> timedelta:
        return timedelta(seconds=self.progress_retention_seconds)
