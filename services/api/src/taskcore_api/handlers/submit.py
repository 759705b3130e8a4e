"""Submitting tasks: validation, idempotency keys, quotas, the store write and dispatch.

The store write and the publish go through ``taskcore.submission.submit_tasks``: one
document per task carrying its own outbox, so a crash between them leaves a task the
outbox relay dispatches later, never a lost task or a message for a task that does not
exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from taskcore import metrics
from taskcore.adapters.mongo import Doc, doc_to_task
from taskcore.domain.delays import MAX_DELAY
from taskcore.domain.ids import idempotent_task_id
from taskcore.domain.status import TaskStatus
from taskcore.domain.task import Tier
from taskcore.limits import TreeLimitExceeded, TreeLimits
from taskcore.quotas import Grant, QuotaExceeded
from taskcore.registry import AnyTaskType
from taskcore.submission import NewTask, Submitted, request_hash, submit_tasks
from taskcore.taskdoc import STATE_FIELDS, ExecState

from taskcore_api import authz, storable
from taskcore_api.auth import Principal
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError, field_path
from taskcore_api.handlers.access import VIEW_FIELDS, view_of
from taskcore_api.handlers.spend import refuse_if_over_budget
from taskcore_api.live import Closed, Follower, LiveEvent, Resync
from taskcore_api.schemas import TaskSubmission, TaskView

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Accepted:
    task: TaskView
    replayed: bool  # an earlier submission with the same Idempotency-Key

    @property
    def finished(self) -> bool:
        return self.task.status.is_terminal


def prepare(
    deps: Deps, principal: Principal, body: TaskSubmission, idempotency_key: str | None
) -> NewTask:
    """The task to create, or a 422 naming the offending field (a 403 for a team the
    caller is not in)."""
    authz.require_team(principal, body.team_id)
    if not deps.registry.submittable(body.task_type):
        raise ApiError(
            422,
            "unknown_task_type",
            f"Unknown task type {body.task_type!r}; GET /v1/task-types lists them.",
            [{"field": "task_type", "reason": "not a registered task type"}],
        )
    # Checked as the client sent them: validation may coerce (NaN becomes null, say).
    unstorable = storable.problems(body.parameters, "parameters") + storable.problems(
        {"labels": body.labels, "idempotency_key": idempotency_key or ""}, "body"
    )
    if unstorable:
        raise ApiError(422, "invalid_parameters", "The submission cannot be stored.", unstorable)
    task_type = deps.registry.get(body.task_type)
    try:
        params = task_type.Params.model_validate(body.parameters)
    except ValidationError as exc:
        details = [
            {"field": field_path(["parameters", *e["loc"]]), "reason": e["msg"]}
            for e in exc.errors()
        ]
        raise ApiError(422, "invalid_parameters", "The parameters are not valid.", details) from exc
    planned = task_type.planned_children(params)
    try:  # the limits a running parent meets, checked before it runs
        TreeLimits.from_settings(deps.settings).check(
            depth=1, children=planned, descendants=planned
        )
    except TreeLimitExceeded as exc:
        raise ApiError(
            422,
            "tree_limit_exceeded",
            f"The task would create {planned} subtasks: {exc}.",
            [{"field": "parameters", "reason": "asks for more subtasks than allowed"}],
        ) from None
    parameters = params.model_dump(mode="json")
    tier: Tier = "free" if principal.tier == "free" else "paid"
    fields = body.model_dump(mode="json", include=set(TaskSubmission.model_fields))
    # Absent optional fields hash as before they existed: a retried submission from
    # before an upgrade keeps its Idempotency-Key.
    for optional in OPTIONAL_FIELDS:
        if fields.get(optional) in (None, {}, ""):
            fields.pop(optional, None)
    new = NewTask(
        user_id=principal.user_id,
        task_type=body.task_type,
        parameters=parameters,
        priority=body.priority,
        max_attempts=body.max_attempts or task_type.retry.max_attempts,
        tier=tier,
        subtask_policy=task_type.subtask_policy.value,
        failure_threshold=task_type.failure_threshold,
        request_hash=request_hash(fields),
        labels=dict(body.labels),
        team_id=body.team_id,
        scheduled_for=start_time(body, datetime.now(UTC)),
        timeout_seconds=timeout(body, task_type),
    )
    if idempotency_key:
        # Scoped per user: the same key from another user names another task.
        new = replace(new, task_id=idempotent_task_id(principal.user_id, idempotency_key))
    return new


OPTIONAL_FIELDS = ("labels", "team_id", "run_at", "delay_seconds", "timeout_seconds")


def start_time(body: TaskSubmission, now: datetime) -> datetime | None:
    """When the task may start (None: at once), or a 422 naming the field."""
    if body.run_at is not None and body.delay_seconds is not None:
        raise ApiError(
            422,
            "validation_failed",
            "Give run_at or delay_seconds, not both.",
            [{"field": "delay_seconds", "reason": "not together with run_at"}],
        )
    if body.delay_seconds is not None:
        return now + timedelta(seconds=body.delay_seconds) if body.delay_seconds else None
    if body.run_at is not None and body.run_at - now > MAX_DELAY:
        raise ApiError(
            422,
            "validation_failed",
            "run_at is too far ahead.",
            [{"field": "run_at", "reason": f"at most {MAX_DELAY.days} days from now"}],
        )
    return body.run_at


def timeout(body: TaskSubmission, task_type: AnyTaskType) -> float | None:
    """The submission's own attempt time limit, or a 422 if it exceeds the type's."""
    limit = task_type.timeout_seconds
    if body.timeout_seconds is not None and limit is not None and body.timeout_seconds > limit:
        raise ApiError(
            422,
            "validation_failed",
            f"timeout_seconds is over {task_type.name}'s own limit of {limit:g} s.",
            [{"field": "timeout_seconds", "reason": f"at most {limit:g} for this task type"}],
        )
    return body.timeout_seconds


def conflict() -> ApiError:
    return ApiError(
        409, "idempotency_conflict", "This Idempotency-Key was used with a different request body."
    )


def quota_error(exc: QuotaExceeded) -> ApiError:
    window = exc.window
    if exc.requested > window.limit:
        message = f"{exc.requested} tasks are more than the {window.name} quota of {window.limit}."
    else:
        message = f"Over the submission quota of {window.limit} tasks per {window.name}."
    return ApiError(
        429,
        "quota_exceeded",
        message,
        {"window": window.name, "limit": window.limit, "retry_after_seconds": exc.retry_after_s},
        headers={"Retry-After": str(exc.retry_after_s)},
    )


async def take_quota(deps: Deps, principal: Principal, count: int) -> Grant:
    try:
        return await deps.quotas.take(principal.user_id, principal.tier, count)
    except QuotaExceeded as exc:
        metrics.SUBMISSIONS_REJECTED.labels("quota").inc(count)
        raise quota_error(exc) from exc


async def existing_docs(deps: Deps, ids: list[str]) -> dict[str, Doc]:
    """Tasks that already exist under these (idempotency-derived) ids."""
    if not ids:
        return {}
    return await deps.store.documents.get_many(ids, {**VIEW_FIELDS, **STATE_FIELDS})


async def create(
    deps: Deps, principal: Principal, news: list[NewTask], *, also_counted: int = 0
) -> list[Submitted]:
    """Count the quota (``also_counted``: tasks these will create, a workflow's steps),
    store and dispatch; the quota is given back if that fails."""
    await refuse_if_over_budget(deps, principal)
    grant = await take_quota(deps, principal, len(news) + also_counted)
    try:
        results = await submit_tasks(
            deps.store, deps.publisher_for_submissions, news, deps.deliveries
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await deps.quotas.give_back(grant)
        raise
    # Given back for what was not stored: an identical key raced us (the task exists), or
    # the store refused the document (nothing exists).
    not_created = sum(not r.created for r in results)
    if not_created:
        extra = also_counted if not_created == len(news) else 0
        await deps.quotas.give_back(Grant(grant.keys, not_created + extra))
    for new, result in zip(news, results, strict=True):
        if result.created:
            metrics.TASKS_SUBMITTED.labels(new.task_type, new.tier).inc()
        elif result.failed:
            log.error("The store refused task %s: %s", new.task_id, result.failed)
    return results


def not_stored() -> ApiError:
    """The store refused a task's document (its reason is logged, not shown)."""
    return ApiError(503, "not_stored", "The task could not be stored; nothing was created.")


async def submit_one(
    deps: Deps,
    principal: Principal,
    body: TaskSubmission,
    idempotency_key: str | None,
    wait_s: float | None,
) -> Accepted:
    with contextlib.ExitStack() as held:
        if wait_s:  # refused before any work when the user holds too many waits
            held.enter_context(deps.wait_slots.hold(principal.user_id))
        accepted = await _submit(deps, principal, body, idempotency_key, wait_s)
    return replace(accepted, task=authz.shown_task(principal, accepted.task))


async def _submit(
    deps: Deps,
    principal: Principal,
    body: TaskSubmission,
    idempotency_key: str | None,
    wait_s: float | None,
) -> Accepted:
    try:
        new = prepare(deps, principal, body, idempotency_key)
    except ApiError:
        metrics.SUBMISSIONS_REJECTED.labels("invalid").inc()
        raise
    with deps.live.follow(new.task_id) as follower:
        accepted = await store_or_find(deps, principal, new, keyed=idempotency_key is not None)
        if wait_s and not accepted.finished:
            await wait_until_terminal(deps, follower, min(wait_s, MAX_WAIT_SECONDS))
            # One read, finished or not: the task as it stands.
            accepted = replace(accepted, task=await _read(deps, new.task_id, accepted.task))
    return accepted


async def store_or_find(
    deps: Deps, principal: Principal, new: NewTask, *, keyed: bool, also_counted: int = 0
) -> Accepted:
    """Store a new task, or answer a retried submission (``keyed``: an idempotency key)
    with the task it made; ``also_counted`` as for ``create``."""
    if keyed:
        # A retried submission is answered without counting against the quota.
        old = (await existing_docs(deps, [new.task_id])).get(new.task_id)
        if old is not None:
            return replay_of(old, new)
    [result] = await create(deps, principal, [new], also_counted=also_counted)
    if result.failed:
        raise not_stored()
    if result.conflict:
        raise conflict()
    return Accepted(TaskView.of(result.task), replayed=not result.created)


def replay_of(old: Doc, new: NewTask) -> Accepted:
    if ExecState.of(old).request_hash != new.request_hash:
        metrics.SUBMISSIONS_REJECTED.labels("idempotency_conflict").inc()
        raise conflict()
    return Accepted(view_of(old), replayed=True)


async def _read(deps: Deps, task_id: str, fallback: TaskView) -> TaskView:
    doc = await deps.store.tasks.find_one({"_id": task_id}, VIEW_FIELDS)
    return TaskView.of(doc_to_task(doc)) if doc is not None else fallback


async def wait_until_terminal(deps: Deps, follower: Follower, timeout_s: float) -> bool:
    """Whether the followed task reached a terminal status within ``timeout_s``.

    Waits on the process's event subscription, not by polling the store; the store is
    read only after a resync (missed events).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        notice = await follower.next(left)
        if notice is None or isinstance(notice, Closed):
            return False
        if isinstance(notice, LiveEvent) and notice.terminal:
            return True
        if isinstance(notice, Resync):
            doc = await deps.store.tasks.find_one({"_id": follower.task_id}, {"status": 1})
            if doc is not None and TaskStatus(doc["status"]).is_terminal:
                return True
    return False
