"""The bodies and headers of the messages taskcore's services exchange.

Task messages (on ``tasks.exchange``) carry only what the executor needs to claim and run
the task; the task document is the authority. Internal event messages carry one or more
events, so producers can batch (several events per AMQP message).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskcore.domain.events import TaskEvent
from taskcore.domain.task import Tier

HEADER_TASK_ID = "x-task-id"
HEADER_TASK_TYPE = "x-task-type"
HEADER_RETRY_COUNT = "x-retry-count"
HEADER_USER_ID = "x-user-id"
HEADER_DISPATCH = "x-dispatch"
HEADER_TRACEPARENT = "traceparent"
HEADER_DEAD_REASON = "x-dead-reason"
HEADER_DEAD_ERROR = "x-dead-error"
HEADER_DEAD_TRACEBACK = "x-dead-traceback"
HEADER_DEAD_SOURCE = "x-dead-source"


class TaskMessage(BaseModel):
    """Body of a dispatch message. ``dispatch`` numbers the deliveries of one task, so an
    executor can tell a redelivery of a dispatch it finished from a new one (a retry or a
    replay)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    task_type: str
    user_id: str
    tier: Tier = "paid"
    priority: int = 0
    parameters: dict[str, Any] = Field(default_factory=dict)
    dispatch: int = 1
    retry_count: int = 0


class EventBatch(BaseModel):
    """Body of an internal event message: one or more events, in the order produced."""

    model_config = ConfigDict(frozen=True)

    events: list[TaskEvent]


class CommittedEvent(BaseModel):
    """An event the aggregator has committed, with the task state right after it."""

    model_config = ConfigDict(frozen=True)

    event: TaskEvent
    task: dict[str, Any]


class CommittedBatch(BaseModel):
    """Body of the aggregator's after-commit hand-off to the event bridge."""

    model_config = ConfigDict(frozen=True)

    items: list[CommittedEvent]
