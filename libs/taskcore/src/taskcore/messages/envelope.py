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
from taskcore.messages.topology import TASKS_EXCHANGE, dispatch_routing_key

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


class Dispatch(BaseModel):
    """A task message to publish, and where to."""

    model_config = ConfigDict(frozen=True)

    message: TaskMessage
    exchange: str = TASKS_EXCHANGE
    routing_key: str = ""
    traceparent: str | None = None
    extra_headers: dict[str, str | int] = {}

    def headers(self) -> dict[str, Any]:
        m = self.message
        headers: dict[str, Any] = {
            HEADER_TASK_ID: m.task_id,
            HEADER_TASK_TYPE: m.task_type,
            HEADER_RETRY_COUNT: m.retry_count,
            HEADER_USER_ID: m.user_id,
            HEADER_DISPATCH: m.dispatch,
        }
        if self.traceparent:
            headers[HEADER_TRACEPARENT] = self.traceparent
        headers.update(self.extra_headers)
        return headers

    @property
    def message_id(self) -> str:
        """Stable across re-sends: ``<task id>:<dispatch>``."""
        return f"{self.message.task_id}:{self.message.dispatch}"

    def key(self) -> str:
        return self.routing_key or dispatch_routing_key(self.message.tier)


class OutboxEntry(BaseModel):
    """What one step must publish: its event, and the dispatch it opened (if any)."""

    model_config = ConfigDict(frozen=True)

    event: TaskEvent
    dispatch: Dispatch | None = None


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
