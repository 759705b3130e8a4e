"""The public API for task-type authors: subclass ``TaskType`` and implement ``execute``.

    class Resize(TaskType[ResizeParams, ResizeResult]):
        name = "images.resize"
        Params = ResizeParams
        Result = ResizeResult
        retry = RetryPolicy(max_attempts=5)

        async def execute(self, params: ResizeParams, ctx: TaskContext) -> ResizeResult:
            await ctx.update_progress({"done": 0})
            ctx.check_cancelled()
            ...

Register it through the ``taskcore.task_types`` entry point group (a list or a mapping
of ``TaskType`` instances) or by naming its module in ``TASKCORE_PLUGINS`` (the module
exposes ``TASK_TYPES``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from taskcore.domain.retry_policy import RetryPolicy

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class SubtaskPolicy(StrEnum):
    COLLECT_ALL = "collect_all"  # wait for all; COMPLETED, or COMPLETED_WITH_ERRORS
    FAIL_FAST = "fail_fast"  # first failure cancels the open siblings; parent FAILED
    THRESHOLD = "threshold"  # FAILED once failures exceed the type's threshold


class RetryableError(Exception):
    """Try again later, within the attempt budget."""


class NonRetryableError(Exception):
    """Trying again cannot help; dead-letter at once."""


class RateLimitedError(Exception):
    """The provider asked us to slow down: retry after ``retry_after`` seconds without
    using up an attempt."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TaskCancelled(Exception):
    """Raised by ``TaskContext.check_cancelled`` at a checkpoint once a cancel arrived."""


class BudgetExceeded(NonRetryableError):
    """A provider call would take the task's user past one of their budgets
    (``TASKCORE_BUDGETS``), so it was not made. ``budget`` names it (``daily_cost``...)."""

    def __init__(self, message: str, *, budget: str, resets_at: datetime) -> None:
        super().__init__(message)
        self.budget = budget
        self.resets_at = resets_at


class MeteredCall(Protocol):
    """One provider call in progress, reserved against the user's budgets."""

    async def record(
        self, *, model: str, prompt_tokens: int, completion_tokens: int, cost_nanos: int
    ) -> None:
        """The provider answered, using this much (cost in nano-units of the currency):
        recorded once in the task's usage, and charged to the budgets."""


class Spend(Protocol):
    """Where a task's provider calls are reserved and recorded (``TaskContext.spend``).

    A task type that calls an LLM provider itself wraps each call::

        async with ctx.spend.call("openai", tokens=estimate, cost_nanos=cost) as call:
            reply = await my_client.chat(...)
            await call.record(model=reply.model, prompt_tokens=..., completion_tokens=...,
                              cost_nanos=...)

    ``call`` reserves the estimate against the user's budgets first (raising
    ``BudgetExceeded``, so the call is never made, when it would pass one); leaving the
    block settles the reservation with what was recorded (nothing recorded: released).
    """

    def call(
        self, provider: str, *, tokens: int, cost_nanos: int
    ) -> AbstractAsyncContextManager[MeteredCall]: ...


class _Unmetered:
    async def record(
        self, *, model: str, prompt_tokens: int, completion_tokens: int, cost_nanos: int
    ) -> None:
        return None


class NoSpend:
    """A ``Spend`` that reserves and records nothing (tools, and tests of a task type)."""

    @asynccontextmanager
    async def call(
        self, provider: str, *, tokens: int, cost_nanos: int
    ) -> AsyncIterator[MeteredCall]:
        yield _Unmetered()


class TaskTimeout(RetryableError):
    """The attempt ran past its deadline (``timeout_seconds``): raised by
    ``TaskContext.check_cancelled`` once the deadline passed, or recorded for an attempt
    that did not stop on its own. Retried within the budget, like any transient failure."""


class SubtaskSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_type: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: int | None = None
    max_attempts: int | None = None
    # Stable across re-runs of the parent, so a re-run never creates a child twice.
    key: str


class TaskContext(Protocol):
    """What a running task may do besides computing its result."""

    task_id: str
    user_id: str
    tier: str
    attempt: int
    retry_count: int
    log: logging.LoggerAdapter[logging.Logger]
    # Provider calls: budgets and usage (see ``Spend``).
    spend: Spend

    async def update_progress(self, progress: dict[str, Any]) -> None:
        """Record progress; throttled, never waits on the broker."""

    async def submit_subtasks(self, specs: list[SubtaskSpec]) -> list[str]:
        """Create children (idempotently, by ``spec.key``) and return their ids."""

    async def submit_subtask(self, spec: SubtaskSpec) -> str:
        """Create one child (idempotently, by ``spec.key``) and return its id."""

    def check_cancelled(self) -> None:
        """Raise ``TaskCancelled`` if a cancel has been requested, or ``TaskTimeout`` once
        the attempt is past its deadline."""

    async def heartbeat(self) -> None:
        """Extend this attempt's lease now (long CPU-bound steps call this)."""


class TaskType(Generic[P, R]):
    """A registered kind of work."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    Result: ClassVar[type[BaseModel]]
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    subtask_policy: ClassVar[SubtaskPolicy] = SubtaskPolicy.COLLECT_ALL
    failure_threshold: ClassVar[float] = 0.5  # for SubtaskPolicy.THRESHOLD
    # CPU-bound types run in a worker thread so they do not stall the event loop.
    cpu_bound: ClassVar[bool] = False
    # Each attempt's time limit in seconds (None: none). A submission may ask for less.
    # At the deadline the attempt is asked to stop (``check_cancelled`` raises
    # ``TaskTimeout``); one that has not stopped a few seconds later is abandoned.
    timeout_seconds: ClassVar[float | None] = None
    # False for the types taskcore creates itself (a workflow, its for_each containers):
    # POST /v1/tasks refuses them and GET /v1/task-types does not list them.
    submittable: ClassVar[bool] = True

    async def execute(self, params: P, ctx: TaskContext) -> R:
        raise NotImplementedError

    def planned_children(self, params: P) -> int:
        """How many subtasks a run with these parameters creates, when the type knows in
        advance (a submission asking for more than TASKCORE_MAX_CHILDREN is a 422)."""
        return 0

    def parameters_schema(self) -> dict[str, Any]:
        return self.Params.model_json_schema()
