"""Request and response bodies of the schedule routes (``/v1/schedules``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from taskcore.scheduling.plan import CatchUp, Overlap

from taskcore_api.schemas import TaskSubmission


class ScheduleRequest(BaseModel):
    """A recurring schedule: a task submission created at each due time of ``cron``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly report",
                    "cron": "0 3 * * *",
                    "timezone": "Europe/Berlin",
                    "task": {"task_type": "diag.noop", "labels": {"report": "nightly"}},
                    "overlap": "skip",
                    "catch_up": "one",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(
        min_length=1,
        max_length=200,
        description="Five fields (minute hour day-of-month month day-of-week), or six with "
        "seconds first (`*/3 * * * * *`: every three seconds).",
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="The IANA time zone the expression is read in (daylight saving: see "
        "the README).",
    )
    task: TaskSubmission = Field(
        description="What to run at each due time: a task submission (`delay_seconds` "
        "counts from the due time; `run_at` has no meaning here)."
    )
    overlap: Overlap = Field(
        default=Overlap.ALLOW,
        description="`skip`: create no task while the previous run is unfinished.",
    )
    catch_up: CatchUp = Field(
        default=CatchUp.NONE,
        description="After a pause or an outage: `one` runs the last missed due time once; "
        "`none` goes on from the next one.",
    )


class ScheduleView(BaseModel):
    id: str
    name: str
    cron: str
    timezone: str
    task: dict[str, Any]
    overlap: Overlap
    catch_up: CatchUp
    paused: bool
    next_run_at: datetime | None = Field(
        description="The next due time (null while paused); a time in the past is due now."
    )
    last_run_at: datetime | None = Field(description="The due time of the last task created.")
    last_task_id: str | None
    user_id: str
    team_id: str | None
    created_at: datetime


class ScheduleList(BaseModel):
    items: list[ScheduleView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done.")
