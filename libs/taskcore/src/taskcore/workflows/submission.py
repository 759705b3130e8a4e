"""The request body of ``POST /v1/workflows``, as frozen pydantic models.

These models check each field on its own (types, lengths, the step id pattern, the step
count); what needs the whole workflow (duplicate and unknown ids, cycles, references,
the task types' schemas) is ``taskcore.workflows.validation``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_STEPS = 100
# The same bounds as a single task submission (the API's TaskSubmission).
MAX_PRIORITY = 9
MAX_ATTEMPTS_LIMIT = 20

# Step ids: 1 to 64 ASCII letters, digits, "_" or "-". They appear in reference paths
# (``parse.result.text``), in the child keys ``step:<id>[:<n>]`` and as keys of the
# workflow's result, so they may contain neither "." nor "[" nor ":".
STEP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# ``item`` is the root of a for_each element's references (``item.text``), so no step
# may be called that.
RESERVED_STEP_IDS = frozenset({"item"})

# Labels, as the contract fixes them for every submission.
MAX_LABELS = 20
LABEL_KEY_PATTERN = r"^[a-z0-9_.-]{1,63}$"
MAX_LABEL_VALUE = 256

StepId = Annotated[str, StringConstraints(pattern=STEP_ID_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]


class OnFailure(StrEnum):
    """What a step that does not complete does to the rest of the workflow."""

    FAIL_FAST = "fail_fast"  # cancel everything else; the workflow ends FAILED
    CONTINUE = "continue"  # cancel only its dependents; the workflow ends COMPLETED_WITH_ERRORS


class StepSpec(BaseModel):
    """One step: a task to run once every step in ``depends_on`` has COMPLETED.

    ``parameters`` may hold references ``{"$ref": "<step>.result..."}`` anywhere inside;
    ``for_each`` (a reference to a list) runs the task once per element, whose
    parameters may then also refer to ``item``. See ``taskcore.workflows.references``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: StepId = Field(description="Unique within the workflow; `[A-Za-z0-9_-]{1,64}`.")
    task_type: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[StepId, ...] = Field(default=(), max_length=MAX_STEPS)
    # Any JSON here: whether it is a well-formed reference is validation's to say, with
    # a reason a person can act on.
    for_each: Any = None
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_STEP_IDS:
            raise ValueError(f"{value!r} is reserved for for_each elements' references")
        return value


class WorkflowSubmission(BaseModel):
    """A workflow: up to 100 steps forming a directed acyclic graph through ``depends_on``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    # A list, not a tuple: pydantic checks a tuple's length only after validating its
    # items, so one bad step would also give a spurious "at least 1 item" error.
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STEPS)
    on_failure: OnFailure = OnFailure.FAIL_FAST
    labels: dict[LabelKey, LabelValue] | None = Field(default=None, max_length=MAX_LABELS)
