"""The task projection: the state a fold of a task's events produces."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskcore.domain.clock import UtcDatetime
from taskcore.domain.status import TaskStatus
from taskcore.domain.usage import Usage, combined

Tier = Literal["free", "paid"]


class TaskError(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    retryable: bool = False
    traceback: str | None = None


class SubtaskCounts(BaseModel):
    """How many children a parent has in each status; derived from the children."""

    model_config = ConfigDict(frozen=True)

    total: int = 0
    queued: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    dead_letter: int = 0

    @property
    def open(self) -> int:
        return self.queued + self.running

    @property
    def unsuccessful(self) -> int:
        return self.failed + self.cancelled + self.dead_letter


class Task(BaseModel):
    """A task as users see it. Every field is derived from the task's event log."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    task_type: str
    status: TaskStatus
    parameters: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] | None = None
    result: Any = None
    error: TaskError | None = None
    attempts: int = 0
    retry_count: int = 0
    max_attempts: int = 3
    priority: int = 0
    tier: Tier = "paid"
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    last_attempt_at: UtcDatetime | None = None
    next_attempt_at: UtcDatetime | None = None
    execution_node_id: str | None = None
    parent_task_id: str | None = None
    root_task_id: str | None = None
    depth: int = 0  # levels below its root
    # Business labels (validated by the API) and the team the task is shared with; both
    # come from the submission and are inherited by subtasks.
    labels: dict[str, str] = Field(default_factory=dict)
    team_id: str | None = None
    # When the task may start (a delayed submission, or the due time of the schedule
    # that created it), the schedule if any, and the submission's own time limit per
    # attempt; all three come from the submission.
    scheduled_for: UtcDatetime | None = None
    schedule_id: str | None = None
    timeout_seconds: float | None = None
    subtask_policy: str = "collect_all"
    awaiting_children: bool = False
    cancel_requested: bool = False
    dead_letter_id: str | None = None
    subtasks: SubtaskCounts = Field(default_factory=SubtaskCounts)
    # Provider calls this task made itself (folded from its task.usage_recorded events),
    # and those of all its descendants (a parent's, derived from its children like the
    # subtask counters). None: nothing recorded.
    own_usage: Usage | None = None
    descendant_usage: Usage | None = None
    # A workflow's steps as they stand: derived from its task tree by the workflow
    # runtime (like ``subtasks``), not folded from its own log.
    workflow: dict[str, Any] | None = None
    # The highest event sequence folded into this state.
    version: int = 0

    @property
    def usage(self) -> Usage | None:
        """Every call of every attempt, of the task and of its descendants."""
        return combined(self.own_usage, self.descendant_usage)
