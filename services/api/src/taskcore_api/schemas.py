"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from taskcore.domain.delays import MAX_DELAY
from taskcore.domain.events import TaskEvent
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import SubtaskCounts, Task, TaskError
from taskcore.domain.usage import ProviderUsage, Usage, units_of

from taskcore_api.errors import ErrorBody

MAX_PRIORITY = 9
MAX_ATTEMPTS_LIMIT = 20
MAX_BATCH = 1000
MAX_IDEMPOTENCY_KEY = 200
MAX_LABELS = 20
LABEL_KEY_PATTERN = r"^[a-z0-9_.-]{1,63}$"
MAX_LABEL_VALUE = 256
MAX_TEAM_ID = 200
MAX_DELAY_SECONDS = MAX_DELAY.total_seconds()
# A submission's own time limit, when its type declares none.
MAX_TIMEOUT_SECONDS = 24 * 3600.0

LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=63)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        max_length=MAX_LABELS,
        description=(
            f"Business labels: at most {MAX_LABELS} keys (`[a-z0-9_.-]{{1,63}}`) to string "
            f"values of at most {MAX_LABEL_VALUE} characters. Returned on the task, copied "
            "to its subtasks, in its CloudEvents, and filterable: `GET /v1/tasks?label=k:v`."
        ),
        examples=[{"project_id": "42", "scene_id": "7"}],
    ),
]
TeamId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEAM_ID)]


def _within_utc_range(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+01:00 is a valid RFC 3339 time whose UTC equivalent is before
    # year 1, which Python's datetime cannot hold: converting it would raise (a 500).
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("out of range once converted to UTC") from None
    return value


# A time from a client: one that can be converted to UTC (every comparison does).
ClientTime = Annotated[datetime, AfterValidator(_within_utc_range)]
ClientAwareTime = Annotated[AwareDatetime, AfterValidator(_within_utc_range)]


class TaskSubmission(BaseModel):
    """One task to run. ``parameters`` must validate against the type's parameter schema
    (``GET /v1/task-types``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"task_type": "diag.sleep", "parameters": {"seconds": 1}, "priority": 5}]
        },
    )

    task_type: str = Field(min_length=1, max_length=200, description="A registered task type.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=0, le=MAX_PRIORITY, description="0 (lowest) to 9.")
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ATTEMPTS_LIMIT,
        description="Attempts before dead-lettering; the type's default when absent.",
    )
    labels: Labels = Field(default_factory=dict)
    team_id: TeamId | None = Field(
        default=None,
        description="Share the task with this team (one of yours; else 403): every member "
        "sees and may cancel it, and its subtasks inherit it.",
    )
    run_at: ClientAwareTime | None = Field(
        default=None,
        description="Start no earlier than this (RFC 3339 with an offset; at most 30 days "
        "ahead). The task is QUEUED with `scheduled_for` until then, and may start up to "
        "about a second late. Not with `delay_seconds`.",
        examples=["2030-01-01T09:00:00Z"],
    )
    delay_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        description="Start no earlier than this many seconds from now (at most 30 days).",
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="Each attempt's time limit: an attempt still running then is stopped and "
        "fails with the retryable `TaskTimeout`. At most the type's own limit, when it "
        "declares one; otherwise at most 24 hours.",
    )


class BatchItem(TaskSubmission):
    """A batch entry: a submission with its own optional idempotency key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"task_type": "diag.noop", "parameters": {}, "idempotency_key": "order-17"}
            ]
        },
    )

    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        description="Like the Idempotency-Key header of a single submission, per item.",
    )


class BatchRequest(BaseModel):
    """Up to 1000 submissions. Each item is validated on its own, so one bad item fails
    alone; its result says why. (The route decodes the body item by item, see
    ``batch_body``; this model documents it.)"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tasks": [
                        {"task_type": "diag.noop"},
                        {"task_type": "diag.sleep", "parameters": {"seconds": 0.5}},
                    ]
                }
            ]
        },
    )

    tasks: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class ProviderUsageView(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    calls: int
    cost: float = Field(description="In the configured currency (`TASKCORE_CURRENCY`).")

    @classmethod
    def of(cls, usage: ProviderUsage) -> ProviderUsageView:
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=usage.calls,
            cost=units_of(usage.cost_nanos),
        )


class UsageView(ProviderUsageView):
    """Every provider call of every attempt (failed ones too) of the task and of all its
    descendants, with the same per provider."""

    by_provider: dict[str, ProviderUsageView]

    @classmethod
    def of(cls, usage: ProviderUsage) -> UsageView:
        parts = usage.by_provider if isinstance(usage, Usage) else {}
        return cls(
            **ProviderUsageView.of(usage).model_dump(),
            by_provider={name: ProviderUsageView.of(part) for name, part in parts.items()},
        )


class WorkflowStepView(BaseModel):
    status: str = Field(description="PENDING until the step starts, then its task's status.")
    task_ids: list[str] = Field(description="Its task, or its elements' tasks (for_each).")
    depends_on: list[str]


class WorkflowView(BaseModel):
    """A workflow's steps as they stand (on tasks of type ``workflow``)."""

    name: str | None
    on_failure: Literal["fail_fast", "continue"]
    steps: dict[str, WorkflowStepView]


class TaskView(BaseModel):
    """A task as the API shows it."""

    id: str
    user_id: str
    task_type: str
    status: TaskStatus
    parameters: dict[str, Any]
    progress: dict[str, Any] | None
    result: Any
    error: TaskError | None
    attempts: int
    retry_count: int
    max_attempts: int
    priority: int
    tier: Literal["free", "paid"]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    execution_node_id: str | None
    parent_task_id: str | None
    root_task_id: str | None
    labels: dict[str, str]
    team_id: str | None
    scheduled_for: datetime | None = Field(
        default=None,
        description="Not started before this time: a delayed submission's, or the due time "
        "of the schedule that created the task.",
    )
    schedule_id: str | None = Field(default=None, description="The schedule that made it.")
    timeout_seconds: float | None = Field(
        default=None, description="The submission's own limit per attempt, if it set one."
    )
    cancel_requested: bool
    subtasks: SubtaskCounts
    usage: UsageView | None = Field(
        default=None, description="LLM provider calls; null for a task that made none."
    )

    workflow: WorkflowView | None = None
    version: int = Field(description="The highest event sequence folded into this state.")

    @field_validator(
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "last_attempt_at",
        "next_attempt_at",
        "scheduled_for",
    )
    @classmethod
    def _to_store_precision(cls, value: datetime | None) -> datetime | None:
        # The store keeps milliseconds: a task answered before and after it was stored
        # must look the same.
        if value is None:
            return None
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    @classmethod
    def of(cls, task: Task) -> TaskView:
        fields = task.model_dump(exclude={"own_usage", "descendant_usage"})
        usage = task.usage
        return cls.model_validate({**fields, "usage": UsageView.of(usage) if usage else None})


class TaskList(BaseModel):
    items: list[TaskView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done.")


class BatchAccepted(BaseModel):
    ok: Literal[True] = True
    task: TaskView


class BatchRejected(BaseModel):
    ok: Literal[False] = False
    error: ErrorBody


class BatchResponse(BaseModel):
    results: list[BatchAccepted | BatchRejected] = Field(description="In request order.")


class EventView(BaseModel):
    """One entry of a task's event log."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0f3c...:1",
                    "task_id": "0f3c...",
                    "sequence": 1,
                    "type": "task.submitted",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "data": {"task_type": "diag.noop"},
                }
            ]
        }
    )

    event_id: str
    task_id: str
    sequence: int
    type: str
    occurred_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: TaskEvent) -> EventView:
        return cls(
            event_id=event.event_id,
            task_id=event.task_id,
            sequence=event.sequence,
            type=event.type.value,
            occurred_at=event.occurred_at,
            data=event.data,
        )


class EventList(BaseModel):
    items: list[EventView]
    next_cursor: str | None


class StreamEvent(EventView):
    """The data of each SSE event after the first: an event-log entry and the task's
    status right after it. The first SSE event (``event: state``) carries a ``TaskView``."""

    status: TaskStatus


class TaskTypeView(BaseModel):
    name: str
    description: str
    parameters_schema: dict[str, Any]
    timeout_seconds: float | None = Field(
        default=None,
        description="The type's own time limit per attempt (a submission may ask for less).",
    )


class TaskTypeList(BaseModel):
    items: list[TaskTypeView]
