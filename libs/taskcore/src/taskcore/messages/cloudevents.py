"""External events: taskcore's committed events as CloudEvents 1.0, structured JSON mode.

Built and parsed with the official ``cloudevents`` SDK, so what subscribers receive is
exactly what the SDK expects. The pydantic models below describe each external event's
``data``; the AsyncAPI document and the JSON Schemas in ``docs/`` are generated from them
(``python -m taskcore.messages.asyncapi``), and the tests validate real events against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field

from taskcore.domain.events import EventType
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import SubtaskCounts
from taskcore.messages.envelope import CommittedEvent

SOURCE = "/taskcore"
TYPE_PREFIX = "io.taskcore.task."
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

# Task fields every external event's data carries, besides the event's own payload.
TASK_FIELDS = (
    "task_id",
    "task_type",
    "user_id",
    "status",
    "parent_task_id",
    "root_task_id",
    "labels",
    "team_id",
)


def to_cloudevent(item: CommittedEvent) -> CloudEvent:
    event, task = item.event, item.task
    # The payload first, so a payload key that names a task field cannot overwrite it.
    data: dict[str, Any] = {
        **event.data,
        "task_id": event.task_id,
        "task_type": task.get("task_type"),
        "user_id": task.get("user_id"),
        "status": task.get("status"),
        "parent_task_id": task.get("parent_task_id"),
        "root_task_id": task.get("root_task_id"),
        "labels": task.get("labels") or {},
        "team_id": task.get("team_id"),
        "sequence": event.sequence,
    }
    attributes: dict[str, Any] = {
        "id": event.event_id,
        "source": SOURCE,
        "type": cloudevent_type(event.type),
        "subject": event.task_id,
        "time": event.occurred_at,
        "datacontenttype": "application/json",
    }
    if event.traceparent:
        # CloudEvents' Distributed Tracing extension: subscribers can join the task's trace.
        attributes["traceparent"] = event.traceparent
    return CloudEvent(attributes, data)


def cloudevent_type(event_type: EventType) -> str:
    return TYPE_PREFIX + event_type.short_name


def to_amqp_body(event: CloudEvent) -> tuple[bytes, str]:
    """The structured-mode body and content type for an AMQP message."""
    msg = ce_rabbitmq.to_structured_event(event)
    return msg.body, msg.content_type or STRUCTURED_CONTENT_TYPE


def from_amqp_body(body: bytes, content_type: str | None, headers: dict[str, str]) -> CloudEvent:
    """Parse a received external event with the SDK (subscribers and tests use this)."""
    msg = ce_rabbitmq.RabbitMQMessage(headers=headers, content_type=content_type, body=body)
    return ce_rabbitmq.from_rabbitmq_event(msg)


# ---- the data of each external event ---------------------------------------------------
# Payload fields are optional where an older producer may not have sent them; extra keys
# are allowed, so adding a payload field is never a breaking change for subscribers.


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


class ErrorData(_Data):
    """Why an attempt or a task did not succeed."""

    type: str = Field(description="The error class, e.g. `TimeoutError`.")
    message: str
    retryable: bool = False
    traceback: str | None = None


class TaskEventData(_Data):
    """What every external event's ``data`` carries: the task it is about, as committed."""

    task_id: str = Field(description="The task's id; also the CloudEvent `subject`.")
    task_type: str
    user_id: str
    status: TaskStatus = Field(description="The task's status right after this event.")
    parent_task_id: str | None = Field(description="Set on subtasks.")
    root_task_id: str | None = Field(description="The top of the task's tree.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="The task's business labels (inherited by subtasks)."
    )
    team_id: str | None = Field(
        default=None, description="The team the task is shared with (inherited by subtasks)."
    )
    sequence: int = Field(
        ge=1, description="Orders one task's events: higher is later. Not contiguous."
    )


class SubmittedData(TaskEventData):
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 3
    tier: str | None = None
    subtask_policy: str | None = None


class StartedData(TaskEventData):
    node_id: str | None = Field(default=None, description="The executor running the attempt.")
    attempt: int | None = Field(default=None, description="Attempts over the task's life.")
    dispatch: int | None = None
    retry_count: int | None = None


class ProgressData(TaskEventData):
    progress: dict[str, Any] | None = Field(description="Whatever the task type reports.")


class RetryingData(TaskEventData):
    error: ErrorData
    retry_count: int
    next_attempt_at: datetime | None = None
    delay_seconds: float | None = None
    uses_attempt: bool = True


class CompletedData(TaskEventData):
    result: Any = None
    subtasks: SubtaskCounts | None = Field(default=None, description="Set on parents.")


class CompletedWithErrorsData(TaskEventData):
    result: Any = None
    error: ErrorData | None = None
    subtasks: SubtaskCounts | None = None


class FailedData(TaskEventData):
    error: ErrorData | None = None
    subtasks: SubtaskCounts | None = None


class CancelledData(TaskEventData):
    reason: str | None = None
    subtasks: SubtaskCounts | None = None


class DeadLetteredData(TaskEventData):
    error: ErrorData | None = None
    reason: str | None = Field(default=None, description="e.g. `attempts_exhausted`.")
    retry_count: int | None = None
    dead_letter_id: str | None = None


# The events subscribers get (the architecture's list); the others stay internal.
EXTERNAL_DATA: dict[EventType, type[TaskEventData]] = {
    EventType.SUBMITTED: SubmittedData,
    EventType.STARTED: StartedData,
    EventType.PROGRESS: ProgressData,
    EventType.RETRYING: RetryingData,
    EventType.COMPLETED: CompletedData,
    EventType.FAILED: FailedData,
    EventType.CANCELLED: CancelledData,
    EventType.DEAD_LETTERED: DeadLetteredData,
    EventType.COMPLETED_WITH_ERRORS: CompletedWithErrorsData,
}


def is_external(event_type: EventType) -> bool:
    """Whether subscribers get this event type on ``tasks.events.exchange``."""
    return event_type in EXTERNAL_DATA
