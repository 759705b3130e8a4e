"""Cancelling a task on a user's request: a finished task is a 409; otherwise the task and
every open task below it are cancelled by the procedure the executor shares
(``taskcore.cancellation``, docs/design.md "Cancellation")."""

from __future__ import annotations

from taskcore.adapters.mongo import doc_to_task
from taskcore.cancellation import Canceller

from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError
from taskcore_api.handlers.access import get_task, visible_task_doc
from taskcore_api.schemas import TaskView


async def cancel_task(deps: Deps, principal: Principal, task_id: str) -> TaskView:
    doc = await visible_task_doc(deps, principal, task_id)
    if doc_to_task(doc).status.is_terminal:
        raise ApiError(
            409,
            "already_finished",
            f"The task is {doc['status']}; only an open task can be cancelled.",
            {"status": doc["status"]},
        )
    data = {"reason": "cancelled on request", "requested_by": principal.user_id}
    await Canceller(deps.store, deps.publisher).cancel(task_id, data)
    return await get_task(deps, principal, task_id)
