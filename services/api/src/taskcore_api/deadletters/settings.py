"""Dead-letter settings, read once from ``TASKCORE_DLQ_*`` environment variables."""

from __future__ import annotations

import functools

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeadLetterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKCORE_DLQ_", extra="ignore")

    # A task replayed this many times is refused another replay: a message that keeps
    # dying the same way must not loop forever between the executor and an operator.
    replay_limit: int = Field(default=5, ge=0)
    bulk_max: int = Field(default=10_000, ge=1)
    bulk_default_rate: float = Field(default=20.0, gt=0)
    bulk_max_rate: float = Field(default=1000.0, gt=0)
    # How long a bulk-replay runner or a single replay may go silent before another
    # process takes its work over (after a crash).
    job_lease_seconds: float = Field(default=15.0, gt=0)
    replay_lease_seconds: float = Field(default=30.0, gt=0)
    sweep_interval_seconds: float = Field(default=0.5, gt=0)
    prefetch: int = Field(default=64, ge=1)
    # MongoDB documents are capped at 16 MB; a larger body is kept truncated (and cannot
    # be replayed by republishing).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


@functools.cache
def dead_letter_settings() -> DeadLetterSettings:
    """This process's settings, read from the environment once."""
    return DeadLetterSettings()
