"""Every authorization decision of the API, in one place.

Roles: an admin sees and does everything; a user sees and cancels their own tasks and
those of their teams (a task submitted with ``team_id``), and likewise sees, pauses,
resumes and deletes their own and their teams' schedules. Another user's task does not
exist for them (404, never 403, so nobody learns which ids exist). A stream token (see
``identity.stream_tokens``) opens one task's stream and nothing else. Tracebacks are for
admins: a user sees an error's type and message.

Routes call these functions and nothing else decides access; the table test in
``tests/integration/api/test_authz_table.py`` checks every route against every kind of
caller, with API keys and with JWTs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskcore_api.errors import ApiError
from taskcore_api.identity.principal import Principal
from taskcore_api.schemas import EventView, StreamEvent, TaskView

Doc = dict[str, Any]


def is_admin(principal: Principal) -> bool:
    return principal.is_admin and principal.via != "stream_token"


def require_admin(principal: Principal) -> None:
    if not is_admin(principal):
        raise ApiError(403, "forbidden", "This route is for administrators.")


def require_full_credential(principal: Principal) -> None:
    """A stream token is not a credential for anything but its stream."""
    if principal.via == "stream_token":
        raise ApiError(401, "unauthorized", "A stream token opens only its task's stream.")


def is_member(principal: Principal, team_id: str | None) -> bool:
    return team_id is not None and team_id in principal.teams


def can_view(principal: Principal, task: Doc) -> bool:
    if principal.stream_task_id is not None and task.get("_id") != principal.stream_task_id:
        return False
    return (
        principal.is_admin
        or task.get("user_id") == principal.user_id
        or is_member(principal, task.get("team_id"))
    )


def can_cancel(principal: Principal, task: Doc) -> bool:
    return principal.via != "stream_token" and can_view(principal, task)


def can_manage_schedule(principal: Principal, schedule: Doc) -> bool:
    """Pause, resume or delete a schedule: as for cancelling a task, whoever sees it
    (its owner, its team's members, an admin)."""
    return can_cancel(principal, schedule)


def can_see_traceback(principal: Principal) -> bool:
    # An admin's stream token travels in a URL: what it shows is what any user sees.
    return is_admin(principal)


def require_team(principal: Principal, team_id: str | None) -> None:
    """A submission's ``team_id`` must be one of the caller's teams (any, for an admin)."""
    if team_id is not None and not (is_admin(principal) or is_member(principal, team_id)):
        raise ApiError(
            403,
            "not_a_team_member",
            f"You are not a member of team {team_id!r}.",
            [{"field": "team_id", "reason": "not one of your teams"}],
        )


def listing_scopes(principal: Principal, *, team_id: str | None, user_id: str | None) -> list[Doc]:
    """The tasks a listing may return, as filters whose union is the scope: one per
    indexed field, so each is served by its own index (see ``handlers.queries``)."""
    if is_admin(principal):
        scope: Doc = {}
        if user_id:
            scope["user_id"] = {"$eq": user_id}
        if team_id:
            scope["team_id"] = {"$eq": team_id}
        return [scope]
    if team_id is not None:
        if not is_member(principal, team_id):
            raise ApiError(
                403,
                "not_a_team_member",
                f"You are not a member of team {team_id!r}.",
                [{"field": "query.team_id", "reason": "not one of your teams"}],
            )
        return [{"team_id": {"$eq": team_id}}]
    own: Doc = {"user_id": {"$eq": principal.user_id}}
    return [own, *({"team_id": {"$eq": t}} for t in sorted(principal.teams))]


def usage_scope(principal: Principal, group_by: Sequence[str]) -> Doc:
    """The usage ledger rows a caller may sum: an admin all; a user their own calls, and
    with ``group_by`` including ``team`` also their teams' (any member's, on team tasks)."""
    if is_admin(principal):
        return {}
    own: Doc = {"user_id": {"$eq": principal.user_id}}
    if "team" in group_by and principal.teams:
        return {"$or": [own, {"team_id": {"$in": sorted(principal.teams)}}]}
    return own


# ---- what a caller is shown ------------------------------------------------------------


def shown_task(principal: Principal, view: TaskView) -> TaskView:
    if view.error is None or view.error.traceback is None or can_see_traceback(principal):
        return view
    return view.model_copy(update={"error": view.error.model_copy(update={"traceback": None})})


def shown_data(principal: Principal, data: dict[str, Any]) -> dict[str, Any]:
    """An event's data, without the error's traceback unless the caller may see it."""
    error = data.get("error")
    if not isinstance(error, dict) or error.get("traceback") is None:
        return data
    if can_see_traceback(principal):
        return data
    return {**data, "error": {**error, "traceback": None}}


def shown_event(principal: Principal, event: EventView) -> EventView:
    data = shown_data(principal, event.data)
    return event if data is event.data else event.model_copy(update={"data": data})


def shown_stream_event(principal: Principal, event: StreamEvent) -> StreamEvent:
    data = shown_data(principal, event.data)
    return event if data is event.data else event.model_copy(update={"data": data})
