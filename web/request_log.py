"""One JSON line and one count per request, metadata only; and the last defence against 500s.

Handlers add allowed fields (model, sampling parameters, cost) with
`log_fields(request, ...)`; nothing else reaches the log. The path is logged
as its route template, never as sent: image paths hold capability tokens.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.generation import new_request_id
from web.errors import ApiError, error_response
from web.log_buffer import BatchingStreamHandler

log = logging.getLogger("imagegen.request")

# The only fields a request log line may carry.
ALLOWED_FIELDS = frozenset({
    "model", "n", "width", "height", "steps", "guidance", "seed", "response_format",
    "output_format", "ttl_seconds", "device_seconds", "cost", "queue_seconds", "batch_size",
    "ignored_words", "job_id_hash", "key_id",
})


# The status a request that its client abandoned is logged and counted with (as nginx does).
CLIENT_CLOSED = 499


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def log_at_debug(scope: Scope) -> None:
    """Log this request's line at DEBUG, for the frequent and uneventful.

    Successful image fetches are most requests, and at INFO their lines were the
    largest cost of serving one (bench/serving.py). /metrics still counts each.
    """
    scope.setdefault("state", {})["log_level"] = logging.DEBUG


def log_fields(request: Request, **fields: Any) -> None:
    unknown = set(fields) - ALLOWED_FIELDS
    if unknown:
        raise ValueError(f"not loggable: {sorted(unknown)}")
    request.scope.setdefault("state", {}).setdefault("log_fields", {}).update(fields)


_to_json = json.JSONEncoder(separators=(",", ":")).encode


class JsonLineFormatter(logging.Formatter):
    """Message plus whitelisted extras; never exc_info (tracebacks quote values)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        extras = record.__dict__
        for key in ("error_type", "batch_size", "request_id"):
            if key in extras:
                line[key] = extras[key]
        return _to_json(line)


def configure_logging(level: str) -> None:
    # Request lines are written in batches: one write per request was the largest
    # cost of serving an image (bench/serving.py).
    handler = BatchingStreamHandler(sys.stderr, buffered_loggers=frozenset({log.name}))
    handler.setFormatter(JsonLineFormatter())
    # Our lines carry no source location, thread or process, so skip finding them
    # (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints whole URLs (with tokens); its error log prints
    # tracebacks of failures that we already turn into JSON 500s.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs every URL it calls at INFO (and httpcore each connection at DEBUG):
    # webhook URLs are their subscribers' secrets. (store/sweeper.py quiets APScheduler.)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def request_done(scope: Scope, request_id: str, route: str, status: int, started: float) -> None:
    """Count the request in /metrics and log its line, at the level it asked for."""
    seconds = time.perf_counter() - started
    services = getattr(scope["app"].state, "services", None)
    if services is not None:
        services.metrics.request_done(route, scope["method"], status, seconds)
    state = scope.get("state", {})
    level = state.get("log_level", logging.INFO)
    if log.isEnabledFor(level):
        fields = {
            "request_id": request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            **state.get("log_fields", {}),
        }
        log.log(level, "request", extra={"fields": fields})


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if (b"content-type", b"application/json") in headers and not any(
                        name == b"cache-control" for name, _ in headers):
                    # JSON answers may carry capability URLs (images, jobs, batches):
                    # no cache along the way may keep one.
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left mid-request (an upload cut short): its business, not an error.
            status = status or CLIENT_CLOSED
            log.info("client disconnected", extra={"request_id": request_id})
        except Exception as exc:
            # Type only: the message of an arbitrary exception may quote input.
            log.error("unhandled error", extra={"error_type": type(exc).__name__,
                                                "request_id": request_id})
            if status == 0:
                await error_response(ApiError(500, "Internal error.", code="internal_error",
                                              error_type="server_error"))(
                    scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            request_done(scope, request_id, route, status, started)
