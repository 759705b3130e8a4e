"""A minimal driver for the pure workflow domain: it carries ``decide``'s commands out
in memory, records their effects as facts, and lets a test end step tasks as it likes.

It is the loop the real runtime runs, without the store and broker: task ids are
derived from the step keys, as the runtime derives them.
"""

from __future__ import annotations

from typing import Any

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows import (
    CancelStep,
    Command,
    FinishWorkflow,
    StartForEach,
    StartStep,
    StepCheck,
    StepTaskChanged,
    WorkflowCancelRequested,
    WorkflowPlan,
    WorkflowState,
    WorkflowSubmission,
    decide,
    effect,
    evolve,
    initial_state,
    step_key,
)


def plan_of(*steps: dict[str, Any], on_failure: str = "fail_fast") -> WorkflowPlan:
    body = {"steps": list(steps), "on_failure": on_failure}
    return WorkflowPlan.of(WorkflowSubmission.model_validate(body))


def step(step_id: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    """A step body of type diag.echo; ``fields`` add or override keys."""
    return {"id": step_id, "task_type": "diag.echo", "depends_on": list(depends_on), **fields}


def ref(path: str) -> dict[str, str]:
    return {"$ref": path}


class Runner:
    """Drives one workflow: ``settle`` applies ``decide`` until it orders nothing new."""

    def __init__(self, plan: WorkflowPlan, check_step: StepCheck | None = None) -> None:
        self.plan = plan
        self.check_step = check_step
        self.state: WorkflowState = initial_state(plan.steps)
        self.log: list[Command] = []
        self.open_tasks: dict[str, tuple[str, int | None]] = {}
        self.started: dict[str, tuple[Any, ...]] = {}  # step id -> parameters per task

    def decide(self) -> list[Command]:
        return decide(self.plan, self.state, self.check_step)

    def settle(self) -> list[Command]:
        """Carry out orders until none is new; the orders, in the order given."""
        done: list[Command] = []
        while commands := self.decide():
            for command in commands:
                self.carry_out(command)
            done += commands
        return done

    def carry_out(self, command: Command) -> None:
        self.log.append(command)
        task_ids: list[str] = []
        if isinstance(command, StartStep):
            task_ids = [step_key(command.step_id)]
            self.open_tasks[task_ids[0]] = (command.step_id, None)
            self.started[command.step_id] = (command.parameters,)
        elif isinstance(command, StartForEach):
            task_ids = [step_key(command.step_id, n) for n in range(len(command.elements))]
            self.open_tasks.update({t: (command.step_id, n) for n, t in enumerate(task_ids)})
            self.started[command.step_id] = command.elements
        self.state = evolve(self.state, effect(command, task_ids))

    def end(
        self,
        step_id: str,
        status: TaskStatus = TaskStatus.COMPLETED,
        result: Any = None,
        element: int | None = None,
        error: TaskError | None = None,
    ) -> list[Command]:
        """A step task (or an element's) reaches ``status``; then settle."""
        task_id = step_key(step_id, element)
        if status.is_terminal:
            self.open_tasks.pop(task_id, None)
        fact = StepTaskChanged(step_id, task_id, status, result, error, element)
        self.state = evolve(self.state, fact)
        return self.settle()

    def cancel_workflow(self) -> list[Command]:
        self.state = evolve(self.state, WorkflowCancelRequested())
        return self.settle()

    def cancel_orders(self) -> list[CancelStep]:
        return [c for c in self.log if isinstance(c, CancelStep)]

    @property
    def finish(self) -> FinishWorkflow | None:
        ends = [c for c in self.log if isinstance(c, FinishWorkflow)]
        assert len(ends) <= 1, ends
        return ends[0] if ends else None

    def status_of(self, step_id: str) -> TaskStatus | None:
        return self.state.steps[step_id].status
