"""The two task types a workflow runs as: ``workflow`` and its ``for_each`` containers.

- ``workflow``: its one run creates the steps that depend on nothing (their parameters
  hold no references, so they were fully validated at submit) and ends waiting for its
  children. The aggregator then starts every later step as the steps it depends on
  complete, and closes the workflow (``taskcore_aggregator.workflow_runtime``).
- ``workflow.for_each``: a ``for_each`` step's task. Its run creates one child per
  element, in element order, and ends waiting for them; when they have ended, the
  aggregator closes it with the list of their results, in element order. With no
  elements it completes at once with ``[]``.

Neither is submitted directly (``POST /v1/workflows`` creates workflows, and workflows
create containers): ``submittable`` is False.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, RootModel

from taskcore.plugin import SubtaskPolicy, SubtaskSpec, TaskContext, TaskType
from taskcore.workflows.commands import StartStep
from taskcore.workflows.decide import decide
from taskcore.workflows.plan import WORKFLOW_TASK_TYPE, WorkflowPlan
from taskcore.workflows.state import initial_state
from taskcore.workflows.submission import WorkflowSubmission
from taskcore.workflows.tree import FOR_EACH_TASK_TYPE


class WorkflowStarted(BaseModel):
    """The workflow run's own result, until the workflow's final result replaces it."""

    started: list[str] = Field(description="The steps its run started.")


class Workflow(TaskType[WorkflowSubmission, WorkflowStarted]):
    name = WORKFLOW_TASK_TYPE
    description = "A workflow (POST /v1/workflows): steps with dependencies and references."
    Params = WorkflowSubmission
    Result = WorkflowStarted
    submittable: ClassVar[bool] = False

    async def execute(self, params: WorkflowSubmission, ctx: TaskContext) -> WorkflowStarted:
        plan = WorkflowPlan.of(params)
        starts = [c for c in decide(plan, initial_state(plan.steps)) if isinstance(c, StartStep)]
        await ctx.submit_subtasks([_subtask(start) for start in starts])
        return WorkflowStarted(started=[start.step_id for start in starts])


def _subtask(start: StartStep) -> SubtaskSpec:
    return SubtaskSpec(
        task_type=start.task_type,
        parameters=start.parameters,
        priority=start.priority,
        max_attempts=start.max_attempts,
        key=start.key,
    )


class ForEachParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_type: str
    elements: list[dict[str, Any]]
    priority: int | None = None
    max_attempts: int | None = None


class ForEachResult(RootModel[list[Any]]):
    """The elements' results in element order (written when the container closes)."""


class ForEach(TaskType[ForEachParams, ForEachResult]):
    name = FOR_EACH_TASK_TYPE
    description = "A for_each step of a workflow: one child per element."
    Params = ForEachParams
    Result = ForEachResult
    submittable: ClassVar[bool] = False
    # The workflow sets the container's own policy from its on_failure when it creates
    # it; this is the default for a container created any other way.
    subtask_policy = SubtaskPolicy.COLLECT_ALL

    async def execute(self, params: ForEachParams, ctx: TaskContext) -> ForEachResult:
        specs = [
            SubtaskSpec(
                task_type=params.task_type,
                parameters=parameters,
                priority=params.priority,
                max_attempts=params.max_attempts,
                key=str(n),
            )
            for n, parameters in enumerate(params.elements)
        ]
        await ctx.submit_subtasks(specs)
        return ForEachResult([])


def task_types(settings: object = None) -> list[TaskType[Any, Any]]:
    return [Workflow(), ForEach()]
