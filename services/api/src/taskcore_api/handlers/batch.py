"""Batch submission: up to 1000 tasks, each validated alone, stored with one bulk write
and dispatched with pipelined, confirmed publishes.

Quota is all or nothing: the valid new items are counted together, and a batch that does
not fit is refused whole with a 429.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from taskcore import metrics
from taskcore.submission import NewTask
from taskcore.taskdoc import ExecState

from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError, ErrorBody, field_path
from taskcore_api.handlers.access import view_for
from taskcore_api.handlers.submit import conflict, create, existing_docs, not_stored, prepare
from taskcore_api.schemas import (
    BatchAccepted,
    BatchItem,
    BatchRejected,
    BatchResponse,
    TaskSubmission,
    TaskView,
)

Result = BatchAccepted | BatchRejected


@dataclass
class _Slot:
    """One request item on its way through the batch."""

    new: NewTask | None = None
    keyed: bool = False
    result: Result | None = None


async def submit_batch(deps: Deps, principal: Principal, items: list[Any]) -> BatchResponse:
    slots = [_prepare_item(deps, principal, raw) for raw in items]
    await _answer_replays(deps, principal, slots)
    pending = [s for s in slots if s.result is None and s.new is not None]
    if pending:
        results = await create(deps, principal, [s.new for s in pending if s.new])
        for slot, submitted in zip(pending, results, strict=True):
            if submitted.failed:
                slot.result = _rejected(not_stored())
            elif submitted.conflict:
                slot.result = _rejected(conflict())
            else:
                slot.result = BatchAccepted(task=TaskView.of(submitted.task))
    rejected = sum(isinstance(s.result, BatchRejected) for s in slots)
    if rejected:
        metrics.SUBMISSIONS_REJECTED.labels("invalid").inc(rejected)
    return BatchResponse(results=[s.result for s in slots if s.result is not None])


def _prepare_item(deps: Deps, principal: Principal, raw: Any) -> _Slot:
    try:
        item = BatchItem.model_validate(raw)
        body = TaskSubmission.model_validate(item.model_dump(exclude={"idempotency_key"}))
        new = prepare(deps, principal, body, item.idempotency_key)
    except ValidationError as exc:
        details = [{"field": field_path(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        invalid = ApiError(422, "validation_failed", "The item is not valid.", details)
        return _Slot(result=_rejected(invalid))
    except ApiError as exc:
        return _Slot(result=_rejected(exc))
    return _Slot(new=new, keyed=item.idempotency_key is not None)


async def _answer_replays(deps: Deps, principal: Principal, slots: list[_Slot]) -> None:
    """Items whose idempotency key names an existing task get that task (or a 409),
    without counting against the quota."""
    keyed = [s for s in slots if s.keyed and s.new is not None]
    existing = await existing_docs(deps, [s.new.task_id for s in keyed if s.new])
    for slot in keyed:
        assert slot.new is not None
        old = existing.get(slot.new.task_id)
        if old is None:
            continue
        if ExecState.of(old).request_hash != slot.new.request_hash:
            slot.result = _rejected(conflict())
        else:
            slot.result = BatchAccepted(task=view_for(principal, old))


def _rejected(exc: ApiError) -> BatchRejected:
    return BatchRejected(error=ErrorBody(code=exc.code, message=exc.message, details=exc.details))
