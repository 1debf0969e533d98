"""One error body for every error: ``{"detail": [{"type", "msg", "loc"}]}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from dtaas.errors import DtaasError, NotAuthenticated, TooManyRequests
from dtaas.web import pages

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ErrorItem(BaseModel):
    type: str
    msg: str
    loc: list[str | int]


class ErrorResponse(BaseModel):
    """The body of every error response."""

    detail: list[ErrorItem]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 429, 500)
}


def _respond(
    request: Request,
    *,
    status: int,
    detail: list[dict[str, Any]],
    headers: Mapping[str, str] | None = None,
) -> Response:
    if pages.wants_page(request):
        return pages.render_error(request, status=status, detail=detail, headers=headers)
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def handle_dtaas_error(request: Request, exc: DtaasError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="dtaas"'
    return _respond(request, status=exc.status_code, detail=exc.to_detail(), headers=headers)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # Keep type, msg and loc only: FastAPI would echo the input, which may be a password.
    detail = [
        {"type": error["type"], "msg": error["msg"], "loc": list(error["loc"])}
        for error in exc.errors()
    ]
    return _respond(request, status=422, detail=detail)


async def handle_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    message = exc.detail if isinstance(exc.detail, str) else "The request failed."
    if exc.status_code == 404:
        message = f"There is nothing at {request.url.path}; check the address."
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    detail = [{"type": _HTTP_TYPES.get(exc.status_code, "http_error"), "msg": message, "loc": []}]
    return _respond(request, status=exc.status_code, detail=detail, headers=exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    request_id = getattr(request.state, "request_id", "-")
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    detail = [
        {
            "type": "internal_error",
            "msg": f"Something went wrong on the server; quote request id {request_id} "
            "when you report it.",
            "loc": [],
        }
    ]
    return _respond(request, status=500, detail=detail)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    # The decorator form accepts handlers typed for their own exception class.
    app.exception_handler(DtaasError)(handle_dtaas_error)
    app.exception_handler(RequestValidationError)(handle_validation_error)
    app.exception_handler(StarletteHTTPException)(handle_http_error)
    app.exception_handler(Exception)(handle_unexpected)
