"""Errors in OpenAI's JSON shape; domain errors become HTTP codes here and only here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import errors as domain
from service import tenancy
from web.routing import allowed_methods

RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type
        self.headers = headers or {}


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.error_type,
                      "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def bad_request(message: str, param: str, status: int = 400) -> ApiError:
    return ApiError(status, message, param=param, code="invalid_value")


@dataclass(frozen=True, slots=True)
class Status:
    """How one kind of domain error is answered over HTTP (its code and message are its own)."""

    status: int
    error_type: str = "invalid_request_error"
    retry_after: int | None = None  # seconds, when the error itself names none


# The one table: each domain error's HTTP status. First match wins, so subclasses go first.
DOMAIN_ERRORS: dict[type[Exception], Status] = {
    domain.InvalidInput: Status(400),
    domain.RequestRefused: Status(400),
    tenancy.MissingKey: Status(401, "authentication_error"),
    tenancy.KeyRejected: Status(403, "permission_error"),
    tenancy.KeyNotFound: Status(404),
    domain.AdapterNotFound: Status(404),
    domain.JobNotFound: Status(404),
    domain.BatchNotFound: Status(404),
    domain.JobEnded: Status(409),
    domain.BatchEnded: Status(409),
    domain.IdempotencyConflict: Status(409),
    domain.JobCanceled: Status(409),
    domain.BatchExpired: Status(410),
    domain.QueueFull: Status(429, "rate_limit_error", RETRY_AFTER_SECONDS),
    domain.TooManyBatches: Status(429, "rate_limit_error"),
    domain.TooManyJobs: Status(429, "rate_limit_error"),
    tenancy.LimitExceeded: Status(429, "rate_limit_error"),
    domain.StoreFull: Status(503, "server_error", 30),
    domain.StoreUnavailable: Status(503, "server_error", 5),
    domain.BatchStorageUnavailable: Status(503, "server_error"),
    domain.DeviceOutOfMemory: Status(503, "server_error", 5),
    domain.DeadlineExceeded: Status(504, "server_error"),
    domain.PipelineFailed: Status(500, "server_error"),
}


def challenge_headers(exc: Exception) -> dict[str, str]:
    """What a refused client needs to know: how to authenticate, or which limit and until when."""
    if isinstance(exc, tenancy.MissingKey):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, tenancy.LimitExceeded):
        # The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers).
        quota = exc.quota
        policy = f'"{quota.name}";q={math.ceil(quota.limit)}'
        if quota.window_seconds is not None:
            policy += f";w={quota.window_seconds}"
        return {"RateLimit-Policy": policy,
                "RateLimit": f'"{quota.name}";r={int(quota.remaining)};t={quota.reset_seconds}'}
    return {}


def api_error_for(exc: Exception) -> ApiError | None:
    failure = domain.failure_of(exc)
    if failure is None:
        return None
    for kind, shape in DOMAIN_ERRORS.items():
        if isinstance(exc, kind):
            retry_after = getattr(exc, "retry_after", None) or shape.retry_after
            headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
            headers.update(challenge_headers(exc))
            return ApiError(shape.status, failure.message, param=failure.param,
                            code=failure.code, error_type=shape.error_type, headers=headers)
    return None


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    error = api_error_for(exc)
    assert error is not None
    return error_response(error)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, "Error.")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # The router names only the first matching route's methods; an app mounted under
        # a path (the static files) names its own, and no route of ours matches there.
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
    return error_response(ApiError(exc.status_code, message, code=code, headers=headers))


def exception_handlers() -> dict[type[Exception] | int, object]:
    handlers: dict[type[Exception] | int, object] = {
        ApiError: handle_api_error,
        HTTPException: handle_http_exception,
    }
    for kind in DOMAIN_ERRORS:
        handlers[kind] = handle_domain_error
    return handlers
