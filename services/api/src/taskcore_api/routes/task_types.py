"""The registered task types and their parameter schemas."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from taskcore_api.auth import Principal, authenticate
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import errors
from taskcore_api.schemas import TaskTypeList, TaskTypeView

router = APIRouter(prefix="/v1", tags=["task types"], responses=errors(401, 503))


@router.get("/task-types", response_model=TaskTypeList, summary="List the task types")
async def list_task_types(
    principal: Principal = Depends(authenticate), deps: Deps = Depends(get_deps)
) -> TaskTypeList:
    return TaskTypeList(
        items=[
            TaskTypeView(
                name=t.name,
                description=t.description,
                parameters_schema=t.parameters_schema(),
                timeout_seconds=t.timeout_seconds,
            )
            for t in deps.registry.all()
            if t.submittable
        ]
    )
