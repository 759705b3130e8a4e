"""The FastAPI application; ``main.serve`` gives it its dependencies."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from taskcore import __version__
from taskcore.observability import ReadinessCheck, add_health_routes

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
from taskcore_api.routes import console, stream, task_types, tasks
from taskcore_api.routes.dead_letters import router as dead_letters_router
from taskcore_api.schemas import BatchItem, StreamEvent

DESCRIPTION = f"""\
Event-sourced background tasks: submit, follow, cancel, replay.

**Authentication.** Every `/v1` route takes `Authorization: Bearer <api key>`. Keys come
from `TASKCORE_API_KEYS`, a JSON object mapping each key to its holder:
`{{"<key>": {{"user_id": "alice", "role": "user", "tier": "free"}}}}` (`role`: `user` or
`admin`, default `user`; `tier`: `free` or `paid`, default `paid`). A missing or unknown
key is a 401. A user sees and acts on only their own tasks (another user's task is a
404); an admin sees all.

**Errors** all have the shape `{{"error": {{"code", "message", "details"}}}}`; for
validation errors `details` lists `{{field, reason}}` with the field's dotted path.

**Limits.** Bodies up to {DEFAULT_LIMIT} bytes ({BATCH_LIMIT} for a batch), else 413.
Submission quotas per tier (`TASKCORE_QUOTA_<TIER>_PER_MINUTE` / `_PER_DAY`, unset:
unlimited) answer 429 with `Retry-After` when exceeded.
"""


def create_app(deps: Deps, readiness: list[ReadinessCheck]) -> FastAPI:
    app = FastAPI(title="taskcore", version=__version__, description=DESCRIPTION)
    app.state.deps = deps
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestMetricsMiddleware)
    install_error_handlers(app)
    app.add_exception_handler(BodyTooLarge, body_too_large)
    add_health_routes(app, readiness)
    app.include_router(tasks.router)
    app.include_router(stream.router)
    app.include_router(task_types.router)
    app.include_router(dead_letters_router)
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
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
        }
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for operation in operations.values():
                    _complete_operation(operation)
        _add_schemas(components.setdefault("schemas", {}), BatchItem, StreamEvent)
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
