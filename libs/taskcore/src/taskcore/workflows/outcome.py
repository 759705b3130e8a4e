"""How a workflow ends, once none of its steps is open: status, result and error."""

from __future__ import annotations

from taskcore.domain.status import TaskStatus
from taskcore.domain.task import TaskError
from taskcore.workflows.commands import FinishWorkflow
from taskcore.workflows.plan import WorkflowPlan
from taskcore.workflows.state import StepState, WorkflowState
from taskcore.workflows.submission import OnFailure

# A step's own error message is quoted in the workflow's up to this length.
MAX_QUOTED_MESSAGE = 300


def finish(plan: WorkflowPlan, state: WorkflowState) -> FinishWorkflow:
    """The ending of a workflow whose steps are all terminal.

    - cancelled: CANCELLED, whatever the steps did (the caller asked for it);
    - every step COMPLETED: COMPLETED, result ``{"steps": {<id>: <result>}}``;
    - fail_fast and a step failed by itself (not cancelled by the workflow): FAILED,
      no result, an error naming the steps that failed;
    - otherwise (continue with failures, or a step COMPLETED_WITH_ERRORS):
      COMPLETED_WITH_ERRORS, the COMPLETED steps' results, an error naming the others.
    """
    steps = {step_id: state.steps[step_id] for step_id in plan.steps}
    if state.cancel_requested:
        return FinishWorkflow(TaskStatus.CANCELLED)
    results = {step_id: s.result for step_id, s in steps.items() if s.completed}
    if len(results) == len(steps):
        return FinishWorkflow(TaskStatus.COMPLETED, {"steps": results})
    causes = [step_id for step_id, s in steps.items() if s.failed_by_itself]
    if plan.on_failure is OnFailure.FAIL_FAST and causes:
        message = "; ".join(_ending(step_id, steps[step_id]) for step_id in causes)
        others = " (the other open steps were cancelled)" if len(causes) < len(steps) else ""
        error = TaskError(type="StepFailed", message=f"step {message}{others}")
        return FinishWorkflow(TaskStatus.FAILED, None, error)
    return FinishWorkflow(TaskStatus.COMPLETED_WITH_ERRORS, {"steps": results}, _errors(steps))


def _errors(steps: dict[str, StepState]) -> TaskError:
    failed = [step_id for step_id, s in steps.items() if s.unsuccessful and not s.skipped]
    skipped = [step_id for step_id, s in steps.items() if s.skipped]
    parts = [_ending(step_id, steps[step_id]) for step_id in failed]
    if skipped:
        names = ", ".join(repr(step_id) for step_id in skipped)
        parts.append(f"not run, as a step they depend on did not complete: {names}")
    count = len(failed) + len(skipped)
    message = f"{count} of {len(steps)} steps did not complete: " + "; ".join(parts)
    return TaskError(type="StepsFailed", message=message)


def _ending(step_id: str, step: StepState) -> str:
    status = step.status.value if step.status else "PENDING"
    if step.error is None:
        return f"{step_id!r} ended {status}"
    text = step.error.message
    if len(text) > MAX_QUOTED_MESSAGE:
        text = text[: MAX_QUOTED_MESSAGE - 3] + "..."
    return f"{step_id!r} ended {status} ({step.error.type}: {text})"
