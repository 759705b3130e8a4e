"""Dead-letter routes (administrators only): list, inspect, replay, bulk replay, discard.

Every route checks the caller is an administrator before it reads the body, so a user
gets a 403 whatever they send; that is why bodies are parsed here rather than declared
as FastAPI body parameters (FastAPI decodes JSON before it runs dependencies).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ValidationError
from taskcore.submission import request_hash
from taskcore.taskdoc import ExecState

from taskcore_api.auth import Principal, require_admin
from taskcore_api.deadletters.actions import DeadLetterActions
from taskcore_api.deadletters.filters import (
    DeadLetterFilter,
    StateFilter,
    decode_cursor,
    encode_cursor,
)
from taskcore_api.deadletters.jobs import ReplayJobs, job_id_for
from taskcore_api.deadletters.results import DeadLetterNotFound, ReplayRefused
from taskcore_api.deadletters.settings import dead_letter_settings
from taskcore_api.deadletters.views import (
    BulkReplayRequest,
    DeadLetterDetail,
    DeadLetterList,
    DeadLetterView,
    DiscardResponse,
    DryRunReport,
    LinkedTask,
    ReplayJobView,
    ReplayRequest,
    ReplayResponse,
)
from taskcore_api.deadletters.worker import actions_for, run_job_soon
from taskcore_api.deps import Deps, get_deps
from taskcore_api.errors import ApiError, ErrorResponse
from taskcore_api.schemas import ClientAwareTime

router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["dead letters"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

M = TypeVar("M", bound=BaseModel)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
REFUSED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


def _actions(deps: Deps) -> tuple[DeadLetterActions, ReplayJobs]:
    return actions_for(deps.store, deps.publisher, deps.registry, dead_letter_settings())


async def _parse(request: Request, model: type[M], *, required: bool) -> M:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(
                422,
                "validation_failed",
                "A JSON body is required.",
                [{"field": "body", "reason": "missing"}],
            )
        return model()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "malformed_json", "The body is not valid JSON.") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(["body", *map(str, e["loc"])]), "reason": e["msg"]}
            for e in exc.errors()
        ]
        raise ApiError(422, "validation_failed", "The request is not valid.", details) from exc


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body parsed by hand: the model's schema with its $defs inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    body: dict[str, Any] = inline(schema)
    return {"requestBody": {"content": {"application/json": {"schema": body}}}}


def _refused(refused: ReplayRefused) -> ApiError:
    return ApiError(refused.status, refused.code, refused.message, refused.details)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "No such dead letter.")


@router.get("", response_model=DeadLetterList, responses={422: {"model": ErrorResponse}})
async def list_dead_letters(
    principal: Principal = Depends(require_admin),
    deps: Deps = Depends(get_deps),
    task_type: Annotated[str | None, Query(max_length=200)] = None,
    reason: Annotated[str | None, Query(max_length=100)] = None,
    user_id: Annotated[str | None, Query(max_length=200)] = None,
    task_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[ClientAwareTime | None, Query(description="dead-lettered at or after")] = None,
    until: Annotated[ClientAwareTime | None, Query(description="dead-lettered before")] = None,
    error_contains: Annotated[
        str | None, Query(max_length=500, description="text in the error (case-insensitive)")
    ] = None,
    state: Annotated[StateFilter, Query(description="active hides discarded ones")] = "active",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> DeadLetterList:
    selection = DeadLetterFilter(
        task_type=task_type,
        reason=reason,
        user_id=user_id,
        task_id=task_id,
        since=since,
        until=until,
        error_contains=error_contains,
    )
    try:
        position = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise ApiError(
            422,
            "invalid_cursor",
            "The cursor is not one this API issued.",
            [{"field": "query.cursor", "reason": "not a valid cursor"}],
        ) from exc
    actions, _ = _actions(deps)
    docs = await actions.repo.page(selection, state, limit + 1, position)
    more = len(docs) > limit
    docs = docs[:limit]
    last = docs[-1] if docs and more else None
    return DeadLetterList(
        items=[DeadLetterView.of(d) for d in docs],
        next_cursor=encode_cursor(last["dead_lettered_at_ms"], last["_id"]) if last else None,
    )


@router.post(
    "/replay",
    response_model=ReplayJobView | DryRunReport,
    status_code=202,
    responses={
        # 200: a dry run's count, or the existing job for a repeated Idempotency-Key.
        200: {"model": ReplayJobView | DryRunReport},
        409: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
    openapi_extra=_body_schema(BulkReplayRequest),
)
async def bulk_replay(
    request: Request,
    response: Response,
    principal: Principal = Depends(require_admin),
    deps: Deps = Depends(get_deps),
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReplayJobView | DryRunReport:
    """Replay every pending dead letter matching the filter, as a resumable job at a
    limited rate; ``dry_run`` only counts them. The job's report lists every outcome."""
    body = await _parse(request, BulkReplayRequest, required=True)
    settings = dead_letter_settings()
    limit = body.max or settings.bulk_max
    rate = body.rate_per_second or settings.bulk_default_rate
    _check_bulk_limits(limit, rate)
    actions, jobs = _actions(deps)
    if body.dry_run:
        matched = await actions.repo.count(body.filter, "pending")
        response.status_code = 200
        return DryRunReport(
            matched=matched,
            would_replay=min(matched, limit),
            sample_ids=await actions.repo.pending_ids(body.filter, min(20, limit)),
        )
    job, created = await jobs.create(
        job_id_for(principal.user_id, idempotency_key),
        body.filter,
        rate=rate,
        limit=limit,
        by=principal.user_id,
        request_hash=request_hash(body.model_dump(mode="json")),
    )
    if not created and job.get("body_hash") != request_hash(body.model_dump(mode="json")):
        raise ApiError(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was used with a different request body.",
        )
    if not created:
        response.status_code = 200
    run_job_soon(jobs, job["_id"])
    return ReplayJobView.of(job)


def _check_bulk_limits(limit: int, rate: float) -> None:
    settings = dead_letter_settings()
    problems = []
    if limit > settings.bulk_max:
        problems.append({"field": "body.max", "reason": f"at most {settings.bulk_max}"})
    if rate > settings.bulk_max_rate:
        problems.append(
            {"field": "body.rate_per_second", "reason": f"at most {settings.bulk_max_rate}"}
        )
    if problems:
        raise ApiError(422, "validation_failed", "The request is not valid.", problems)


@router.get("/replay-jobs/{job_id}", response_model=ReplayJobView, responses=NOT_FOUND)
async def get_replay_job(
    job_id: str, principal: Principal = Depends(require_admin), deps: Deps = Depends(get_deps)
) -> ReplayJobView:
    _, jobs = _actions(deps)
    job = await jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", "No such replay job.")
    return ReplayJobView.of(job)


@router.post("/replay-jobs/{job_id}/resume", response_model=ReplayJobView, responses=NOT_FOUND)
async def resume_replay_job(
    job_id: str, principal: Principal = Depends(require_admin), deps: Deps = Depends(get_deps)
) -> ReplayJobView:
    """Resume a bulk replay whose runner died (a no-op while a live runner holds it)."""
    _, jobs = _actions(deps)
    job = await jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", "No such replay job.")
    run_job_soon(jobs, job_id)
    return ReplayJobView.of(job)


@router.get("/{dead_letter_id}", response_model=DeadLetterDetail, responses=NOT_FOUND)
async def get_dead_letter(
    dead_letter_id: str,
    principal: Principal = Depends(require_admin),
    deps: Deps = Depends(get_deps),
) -> DeadLetterDetail:
    actions, _ = _actions(deps)
    record = await actions.repo.get(dead_letter_id)
    if record is None:
        raise _not_found()
    view = DeadLetterView.of(record)
    task = (
        await deps.store.tasks.find_one({"_id": record["task_id"]})
        if record.get("task_id")
        else None
    )
    return DeadLetterDetail(**view.model_dump(), task=_linked(task) if task else None)


def _linked(task: dict[str, Any]) -> LinkedTask:
    return LinkedTask(
        id=task["_id"],
        status=task.get("status", "UNKNOWN"),
        attempts=int(task.get("attempts") or 0),
        retry_count=int(task.get("retry_count") or 0),
        max_attempts=int(task.get("max_attempts") or 0),
        replays=ExecState.of(task).replays,
    )


@router.post(
    "/{dead_letter_id}/replay",
    response_model=ReplayResponse,
    status_code=202,
    responses={200: {"model": ReplayResponse}, **REFUSED},
    openapi_extra=_body_schema(ReplayRequest),
)
async def replay_dead_letter(
    dead_letter_id: str,
    request: Request,
    response: Response,
    principal: Principal = Depends(require_admin),
    deps: Deps = Depends(get_deps),
) -> ReplayResponse:
    """Replay one dead letter with a fresh attempt budget. Replaying it again is a no-op
    (200, ``already_replayed``); a task replayed too often is refused (409)."""
    body = await _parse(request, ReplayRequest, required=False)
    actions, _ = _actions(deps)
    try:
        outcome = await actions.replay(
            dead_letter_id, by=principal.user_id, parameters=body.parameters
        )
    except DeadLetterNotFound as exc:
        raise _not_found() from exc
    except ReplayRefused as refused:
        raise _refused(refused) from refused
    if outcome.outcome == "already_replayed":
        response.status_code = 200
    return ReplayResponse(outcome=outcome.outcome, dead_letter=DeadLetterView.of(outcome.record))


@router.delete("/{dead_letter_id}", response_model=DiscardResponse, responses=REFUSED)
async def discard_dead_letter(
    dead_letter_id: str,
    principal: Principal = Depends(require_admin),
    deps: Deps = Depends(get_deps),
    note: Annotated[str | None, Query(max_length=1000, description="why it was discarded")] = None,
) -> DiscardResponse:
    """Discard one dead letter: it is kept (``state=discarded``) but never replayed, and
    the discard is recorded as a ``task.discarded`` event on its task."""
    actions, _ = _actions(deps)
    try:
        outcome = await actions.discard(dead_letter_id, by=principal.user_id, note=note)
    except DeadLetterNotFound as exc:
        raise _not_found() from exc
    except ReplayRefused as refused:
        raise _refused(refused) from refused
    return DiscardResponse(outcome=outcome.outcome, dead_letter=DeadLetterView.of(outcome.record))
