"""Reading tasks as a principal may see them: a task they may not see does not exist."""

from __future__ import annotations

from typing import Any

from taskcore.adapters.mongo import PROJECTION_FIELDS, Doc, doc_to_task

from taskcore_api import authz
from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError
from taskcore_api.schemas import TaskView

# The fields a task view needs: not the outbox or the executor's bookkeeping.
VIEW_FIELDS: dict[str, Any] = {f: 1 for f in PROJECTION_FIELDS}
# What an access decision reads.
ACCESS_FIELDS: dict[str, Any] = {"user_id": 1, "team_id": 1, "task_type": 1}


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such task.")


def visible(principal: Principal, doc: Doc | None) -> bool:
    return doc is not None and "task_type" in doc and authz.can_view(principal, doc)


async def visible_task_doc(
    deps: Deps, principal: Principal, task_id: str, fields: dict[str, Any] | None = None
) -> Doc:
    """The task's document if the principal may see it, else a 404 (never a 403, so
    nobody learns which ids exist)."""
    wanted = {**(fields or VIEW_FIELDS), **ACCESS_FIELDS}
    doc = await deps.store.tasks.find_one({"_id": task_id}, wanted)
    if doc is None or not visible(principal, doc):
        raise not_found()
    return doc


async def get_task(deps: Deps, principal: Principal, task_id: str) -> TaskView:
    return view_for(principal, await visible_task_doc(deps, principal, task_id))


def view_of(doc: Doc) -> TaskView:
    return TaskView.of(doc_to_task(doc))


def view_for(principal: Principal, doc: Doc) -> TaskView:
    """The task as this principal is shown it."""
    return authz.shown_task(principal, view_of(doc))
