"""Errors in OpenAI's JSON shape; domain errors become HTTP codes here and only here."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from imagegen.batcher import QueueFull
from imagegen.worker import DeadlineExceeded, DeviceOutOfMemory, JobCanceled, PipelineFailed
from store import StoreFull, StoreUnavailable

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


# Each domain error, and what a client should be told about it (nothing of its content).
DOMAIN_ERRORS: dict[type[Exception], ApiError] = {
    QueueFull: ApiError(429, "The queue is full; retry after a moment.", code="queue_full",
                        error_type="rate_limit_error",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)}),
    StoreFull: ApiError(503, "The image store is full; retry later or ask for b64_json.",
                        code="store_full", error_type="server_error",
                        headers={"Retry-After": "30"}),
    StoreUnavailable: ApiError(503, "The image store is unavailable; retry later.",
                               code="store_unavailable", error_type="server_error",
                               headers={"Retry-After": "5"}),
    DeviceOutOfMemory: ApiError(503, "The device ran out of memory; retry with fewer or "
                                "smaller images.", code="out_of_memory",
                                error_type="server_error", headers={"Retry-After": "5"}),
    DeadlineExceeded: ApiError(504, "Generation took longer than the request deadline.",
                               code="timeout", error_type="server_error"),
    JobCanceled: ApiError(409, "The request was canceled.", code="canceled"),
    PipelineFailed: ApiError(500, "The model failed on this request.", code="pipeline_failed",
                             error_type="server_error"),
}


def api_error_for(exc: Exception) -> ApiError | None:
    for kind, error in DOMAIN_ERRORS.items():
        if isinstance(exc, kind):
            return error
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
    return error_response(ApiError(exc.status_code, message, code=code,
                                   headers=dict(exc.headers or {})))


def exception_handlers() -> dict[type[Exception] | int, object]:
    handlers: dict[type[Exception] | int, object] = {
        ApiError: handle_api_error,
        HTTPException: handle_http_exception,
    }
    for kind in DOMAIN_ERRORS:
        handlers[kind] = handle_domain_error
    return handlers
