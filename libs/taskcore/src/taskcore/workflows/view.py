"""The ``workflow`` field of the workflow task's projection, as the contract fixes it."""

from __future__ import annotations

from typing import Any

from taskcore.workflows.plan import WorkflowPlan
from taskcore.workflows.state import PENDING, WorkflowState


def workflow_view(plan: WorkflowPlan, state: WorkflowState) -> dict[str, Any]:
    """``{"name", "on_failure", "steps": {<id>: {"status", "task_ids", "depends_on"}}}``,
    steps in submission order; ``status`` is ``PENDING`` until the step starts, then its
    task's status (a for_each step's is derived from its elements, whose tasks are its
    ``task_ids`` in element order). JSON-ready: plain dicts, lists and strings."""
    return {
        "name": plan.name,
        "on_failure": plan.on_failure.value,
        "steps": {
            step_id: {
                "status": _status(state, step_id),
                "task_ids": list(state.steps[step_id].task_ids),
                "depends_on": list(planned.depends_on),
            }
            for step_id, planned in plan.steps.items()
        },
    }


def _status(state: WorkflowState, step_id: str) -> str:
    status = state.steps[step_id].status
    return PENDING if status is None else status.value
