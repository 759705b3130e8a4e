"""The FastAPI application; ``main.serve`` gives it its dependencies."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from taskcore import __version__
from taskcore.observability import ReadinessCheck, add_health_routes

from taskcore_api.auth import AuthenticationMiddleware
from taskcore_api.body_limit import (
    BATCH_LIMIT,
    DEFAULT_LIMIT,
    BodyLimitMiddleware,
    BodyTooLarge,
    body_too_large,
)
from taskcore_api.deps import Deps
from taskcore_api.errors import ERRORS, install_error_handlers
from taskcore_api.request_metrics import RequestMetricsMiddleware
from taskcore_api.routes import console, schedules, stream, task_types, tasks, usage, workflows
from taskcore_api.routes.dead_letters import router as dead_letters_router
from taskcore_api.schemas import BatchItem, BatchRequest, StreamEvent

DESCRIPTION = f"""\
Event-sourced background tasks: submit, follow, cancel, replay.

**Authentication.** Every `/v1` route takes `Authorization: Bearer <api key or JWT>`,
checked before the body is read. Keys come from `TASKCORE_API_KEYS` (and the reloadable
`TASKCORE_API_KEYS_FILE`), a JSON object mapping each key (or `sha256:<hex>` of it) to its
holder: `{{"<key>": {{"user_id": "alice", "role": "user", "tier": "free", "teams": ["t1"]}}}}`
(`role`: `user` or `admin`, default `user`; `tier`: `free` or `paid`, default `paid`).
JWTs (HS256 with `TASKCORE_JWT_SECRET`, RS256/ES256 with `TASKCORE_JWT_PUBLIC_KEY`) carry
`sub`, and optionally `role`, `tier` and `teams`. A missing, unknown, expired or wrongly
signed credential is a 401.

**Access.** A user sees and cancels their own tasks and those of their teams (submitted
with `team_id`); another user's task is a 404. An admin sees all, and alone sees errors'
tracebacks. A stream token opens one task's stream and nothing else.

**Errors** all have the shape `{{"error": {{"code", "message", "details"}}}}`; for
validation errors `details` lists `{{field, reason}}` with the field's dotted path.

**Limits.** Bodies up to {DEFAULT_LIMIT} bytes ({BATCH_LIMIT} for a batch), else 413.
Submission quotas per tier (`TASKCORE_QUOTA_<TIER>_PER_MINUTE` / `_PER_DAY`, unset:
unlimited) answer 429 with `Retry-After` when exceeded, as do more than
`TASKCORE_MAX_STREAMS_PER_USER` open streams or `TASKCORE_MAX_WAITS_PER_USER` waiting
submissions per user and API process. A user whose LLM budget (`TASKCORE_BUDGETS`) is used
up gets a 429 `budget_exceeded` with `Retry-After` until the budget's window ends.
"""


def create_app(deps: Deps, readiness: list[ReadinessCheck]) -> FastAPI:
    app = FastAPI(title="taskcore", version=__version__, description=DESCRIPTION)
    app.state.deps = deps
    # The last added runs first: CORS (so preflights need no credential and every answer,
    # a 401 too, carries its headers), metrics, authentication, then the body limit.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuthenticationMiddleware)
    app.add_middleware(RequestMetricsMiddleware)
    if deps.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=deps.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Retry-After", "Idempotent-Replayed", "WWW-Authenticate"],
            max_age=600,
        )
    install_error_handlers(app)
    app.add_exception_handler(BodyTooLarge, body_too_large)
    add_health_routes(app, readiness)
    app.include_router(tasks.router)
    app.include_router(stream.router)
    app.include_router(task_types.router)
    app.include_router(workflows.router)
    app.include_router(dead_letters_router)
    app.include_router(usage.router)
    app.include_router(schedules.router)
    app.include_router(console.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, completed with what the app does for every route: the bearer
    scheme (routes read the header themselves, so FastAPI does not know about it), and the
    app-wide error answers (401, malformed JSON 400, 413, 503, and 422 in our error
    shape rather than FastAPI's default)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."}
        }
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    _complete_operation(operation)
        _add_schemas(
            components.setdefault("schemas", {}),
            BatchItem,
            BatchRequest,
            StreamEvent,
            *workflows.EXTRA_SCHEMAS,
        )
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused not in json.dumps(schema["paths"]):
                components.get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _add_schemas(schemas: dict[str, Any], *models: type[BaseModel]) -> None:
    """Models the routes do not name (a batch's items are validated one by one; stream
    events travel inside SSE), so the document describes and can reference them."""
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)


def _complete_operation(operation: dict[str, Any]) -> None:
    operation["security"] = [{"bearer": []}]
    responses = operation.setdefault("responses", {})
    statuses = [401, 503]
    if "requestBody" in operation:
        statuses += [400, 413, 422]
    if operation.get("parameters"):
        statuses.append(422)
    for status in statuses:
        existing = responses.get(str(status))
        if existing is None or "HTTPValidationError" in json.dumps(existing):
            responses[str(status)] = _error_response(status)


def _error_response(status: int) -> dict[str, Any]:
    entry = ERRORS[status]
    response: dict[str, Any] = {
        "description": entry["description"],
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                "example": entry["content"]["application/json"]["example"],
            }
        },
    }
    if "headers" in entry:
        response["headers"] = entry["headers"]
    return response
