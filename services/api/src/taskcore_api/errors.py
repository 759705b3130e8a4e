"""The one error shape: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
from typing import Any

from aio_pika.exceptions import AMQPError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str = Field(description="A stable, machine-readable error code.")
    message: str = Field(description="One sentence for people.")
    details: Any = Field(
        default=None,
        description="More about the error; for validation errors a list of "
        "`{field, reason}` where `field` is the dotted path of the offending value.",
    )


class ErrorResponse(BaseModel):
    """Every error the API answers has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_parameters",
                        "message": "The parameters are not valid.",
                        "details": [
                            {
                                "field": "parameters.seconds",
                                "reason": "Input should be greater than or equal to 0",
                            }
                        ],
                    }
                }
            ]
        }
    )

    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``("body", "parameters", "seconds")`` -> ``parameters.seconds``: body fields are named
    as the client wrote them; query and header fields keep their prefix."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": field_path(err.get("loc", ())), "reason": err.get("msg", "")}
        for err in exc.errors()
    ]


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        malformed = any(err.get("type") == "json_invalid" for err in exc.errors())
        if malformed:
            return error_response(400, "malformed_json", "The body is not valid JSON.", details)
        return error_response(422, "validation_failed", "The request is not valid.", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(PyMongoError)
    async def store_error(request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("A request failed on the store: %s", exc.__class__.__name__)
        return error_response(503, "unavailable", _UNAVAILABLE, headers={"Retry-After": "1"})

    @app.exception_handler(AMQPError)
    async def broker_error(request: Request, exc: AMQPError) -> JSONResponse:
        log.warning("A request failed on the broker: %s", exc.__class__.__name__)
        return error_response(503, "unavailable", _UNAVAILABLE, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception itself after this answer.
        return error_response(500, "internal_error", "Something went wrong on our side.")


_UNAVAILABLE = (
    "The broker or the store is unavailable; retry shortly (with the same Idempotency-Key, "
    "a retried submission is safe)."
)


def _error(description: str, example_code: str, **extra: Any) -> dict[str, Any]:
    example = {"error": {"code": example_code, "message": description, "details": None}}
    return {
        "model": ErrorResponse,
        "description": description,
        "content": {"application/json": {"example": example}},
        **extra,
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
        "required": True,
    }
}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}

ERRORS: dict[int, dict[str, Any]] = {
    400: _error("The body is not valid JSON.", "malformed_json"),
    401: _error(
        "A bearer API key is missing or unknown.", "unauthorized", headers=_WWW_AUTHENTICATE
    ),
    403: _error("The key's role may not do this.", "forbidden"),
    404: _error("No such task, or not yours.", "not_found"),
    409: _error("The request conflicts with the task's state.", "conflict"),
    413: _error("The body is larger than this route accepts.", "payload_too_large"),
    422: _error("The request is not valid; details name each field.", "validation_failed"),
    429: _error(
        "Over a submission quota or a per-user limit.", "rate_limited", headers=_RETRY_AFTER
    ),
    503: _error(_UNAVAILABLE, "unavailable", headers=_RETRY_AFTER),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {status: ERRORS[status] for status in statuses}
