"""Schedules: create, list, read, pause, resume, delete.

The API validates and stores a schedule; the aggregator fires it (see
``taskcore.scheduling``). The task a schedule creates is validated here once, exactly as
a submission is (type, parameters, team, time limit), and stored resolved, so every run
creates the task the caller was told would be created.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime
from typing import Any

from taskcore.adapters.mongo import count_matching
from taskcore.domain.clock import to_ms
from taskcore.scheduling.cron import Cron, InvalidSchedule
from taskcore.scheduling.documents import (
    ScheduleDocuments,
    from_ms,
    new_schedule_document,
)
from taskcore.scheduling.plan import CatchUp, resume_from

from taskcore_api import authz
from taskcore_api.auth import Principal
from taskcore_api.cursors import decode_cursor, encode_cursor
from taskcore_api.deps import Deps
from taskcore_api.errors import ApiError
from taskcore_api.handlers.submit import OPTIONAL_FIELDS, prepare
from taskcore_api.schedule_schemas import ScheduleList, ScheduleRequest, ScheduleView

Doc = dict[str, Any]
TOP = "~"  # above every list key (they start with digits)


def documents(deps: Deps) -> ScheduleDocuments:
    return ScheduleDocuments(deps.store.db["schedules"], deps.store.documents.clock)


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such schedule.")


def view_of(doc: Doc) -> ScheduleView:
    paused = bool(doc.get("paused"))
    return ScheduleView(
        id=doc["_id"],
        name=doc["name"],
        cron=doc["cron"],
        timezone=doc.get("timezone") or "UTC",
        task=doc.get("task") or {},
        overlap=doc.get("overlap") or "allow",
        catch_up=doc.get("catch_up") or "none",
        paused=paused,
        next_run_at=None if paused else from_ms(doc.get("next_run_ms")),
        last_run_at=from_ms(doc.get("last_run_ms")),
        last_task_id=doc.get("last_task_id"),
        user_id=doc["user_id"],
        team_id=doc.get("team_id"),
        created_at=from_ms(doc.get("created_ms")) or datetime.now(UTC),
    )


def _invalid(field: str, reason: str) -> ApiError:
    return ApiError(
        422, "validation_failed", "The schedule is not valid.", [{"field": field, "reason": reason}]
    )


def _in_task(exc: ApiError) -> ApiError:
    """A submission error, its fields named inside the schedule's ``task``."""
    details = exc.details
    if isinstance(details, list):
        details = [
            {**d, "field": f"task.{d['field']}"} if isinstance(d, dict) and "field" in d else d
            for d in details
        ]
    return ApiError(exc.status, exc.code, exc.message, details, exc.headers)


async def create(deps: Deps, principal: Principal, body: ScheduleRequest) -> ScheduleView:
    try:
        cron = Cron.parse(body.cron, body.timezone)
    except InvalidSchedule as exc:
        raise _invalid(exc.field, exc.reason) from None
    if body.task.run_at is not None:
        raise _invalid(
            "task.run_at", "a schedule's task starts at each due time; use delay_seconds"
        )
    try:
        new = prepare(deps, principal, body.task, None)
    except ApiError as exc:
        raise _in_task(exc) from None
    store = documents(deps)
    owned = await count_matching(store.collection, {"user_id": principal.user_id})
    if owned >= deps.settings.max_schedules_per_user:
        raise ApiError(
            409,
            "schedule_limit",
            f"You have {owned} schedules, the most allowed; delete one first.",
            {"limit": deps.settings.max_schedules_per_user},
        )
    now = datetime.now(UTC)
    task = body.task.model_dump(mode="json")
    for optional in (*OPTIONAL_FIELDS, "run_at", "max_attempts"):
        if task.get(optional) in (None, {}, ""):
            task.pop(optional, None)
    doc = new_schedule_document(
        user_id=principal.user_id,
        team_id=new.team_id,
        name=body.name,
        cron=cron.expression,
        timezone=body.timezone,
        task=task,
        run={
            "task_type": new.task_type,
            "parameters": new.parameters,
            "priority": new.priority,
            "max_attempts": new.max_attempts,
            "tier": new.tier,
            "subtask_policy": new.subtask_policy,
            "failure_threshold": new.failure_threshold,
            "labels": new.labels,
            "delay_seconds": body.task.delay_seconds,
            "timeout_seconds": new.timeout_seconds,
        },
        overlap=body.overlap,
        catch_up=body.catch_up,
        next_run=cron.next_after(now),
        now=now,
    )
    await store.insert(doc)
    return view_of(doc)


async def visible_schedule(deps: Deps, principal: Principal, schedule_id: str) -> Doc:
    doc = await documents(deps).get(schedule_id)
    if doc is None or not authz.can_view(principal, doc):
        raise not_found()
    return doc


async def get(deps: Deps, principal: Principal, schedule_id: str) -> ScheduleView:
    return view_of(await visible_schedule(deps, principal, schedule_id))


async def _managed(deps: Deps, principal: Principal, schedule_id: str) -> Doc:
    doc = await visible_schedule(deps, principal, schedule_id)
    if not authz.can_manage_schedule(principal, doc):
        raise not_found()
    return doc


async def delete(deps: Deps, principal: Principal, schedule_id: str) -> None:
    await _managed(deps, principal, schedule_id)
    if not await documents(deps).delete(schedule_id):
        raise not_found()


async def pause(deps: Deps, principal: Principal, schedule_id: str) -> ScheduleView:
    await _managed(deps, principal, schedule_id)
    doc = await documents(deps).pause(schedule_id)
    if doc is None:
        raise not_found()
    return view_of(doc)


async def resume(deps: Deps, principal: Principal, schedule_id: str) -> ScheduleView:
    doc = await _managed(deps, principal, schedule_id)
    cron = Cron.parse(doc["cron"], doc.get("timezone") or "UTC")
    now = datetime.now(UTC)
    catch_up = CatchUp(doc.get("catch_up") or CatchUp.NONE)
    next_run = resume_from(cron, from_ms(doc.get("next_run_ms")), now, catch_up)
    resumed = await documents(deps).resume(
        schedule_id, None if next_run is None else to_ms(next_run)
    )
    if resumed is None:
        raise not_found()
    return view_of(resumed)


async def list_schedules(
    deps: Deps, principal: Principal, team_id: str | None, limit: int, cursor: str | None
) -> ScheduleList:
    upper = str(decode_cursor(cursor, {"k": str})["k"]) if cursor else TOP
    scopes = authz.listing_scopes(principal, team_id=team_id, user_id=None)
    collection = documents(deps).collection
    parts = [
        await collection.find({**scope, "list_key": {"$lt": upper}})
        .sort("list_key", -1)
        .limit(limit + 1)
        .to_list(None)
        for scope in scopes
    ]
    page: list[Doc] = []
    seen: set[str] = set()
    for doc in heapq.merge(*parts, key=lambda d: str(d["list_key"]), reverse=True):
        if doc["_id"] not in seen:
            seen.add(doc["_id"])
            page.append(doc)
        if len(page) > limit:
            break
    next_cursor = None
    if len(page) > limit:
        page = page[:limit]
        next_cursor = encode_cursor({"k": page[-1]["list_key"]})
    return ScheduleList(items=[view_of(d) for d in page], next_cursor=next_cursor)
