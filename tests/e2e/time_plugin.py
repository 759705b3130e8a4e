"""Task types the time tests load through ``TASKCORE_PLUGINS``."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict
from taskcore.domain.retry_policy import RetryPolicy
from taskcore.plugin import TaskContext, TaskType
from taskcore.settings import Settings


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Crash(TaskType[Empty, Empty]):
    """Kills the executor running it, on every attempt (a segfaulting native library,
    an out-of-memory kill): the stall limit must stop it taking down executor after
    executor."""

    name = "test.crash"
    Params = Empty
    Result = Empty
    retry = RetryPolicy(max_attempts=10)

    async def execute(self, params: Empty, ctx: TaskContext) -> Empty:
        os._exit(70)


def task_types(settings: Settings) -> list[TaskType[Any, Any]]:
    return [Crash()]


TASK_TYPES = task_types
