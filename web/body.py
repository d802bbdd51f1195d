"""Reading request bodies in memory, with a hard cap, never spooling to disk; JSON bodies
parsed strictly and validated by their request model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.requests import Request

from web import strict_json
from web.errors import ApiError
from web.request_models import RequestModelT, field_names, validate

# Bodies larger than this are parsed in a thread: 16 MiB of JSON takes the parser about a
# tenth of a second, which the event loop (and every other client) must not wait for.
ResultT = TypeVar("ResultT")
PARSE_IN_THREAD_BYTES = 64 * 1024


def body_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {max_bytes} bytes.",
                    code="body_too_large")


async def stream_body(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; 413 as soon as it grows past max_bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() \
            and int(declared) > max_bytes:
        raise body_too_large(max_bytes)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise body_too_large(max_bytes)
        yield chunk


async def read_body(request: Request, max_bytes: int, *,
                    line_limit: tuple[int, ApiError] | None = None) -> bytes:
    """The whole body, or 413 as soon as it grows past max_bytes; line_limit (most lines,
    error) counts lines as they arrive, so a huge bulk body is refused before it is read."""
    chunks: list[bytes] = []
    newlines = 0
    async for chunk in stream_body(request, max_bytes):
        if line_limit is not None:
            newlines += chunk.count(b"\n")
            if newlines > line_limit[0]:
                raise line_limit[1]
        chunks.append(chunk)
    return b"".join(chunks)


def require_media_type(request: Request, *allowed: str) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in allowed:
        raise ApiError(415, f"Content-Type must be {' or '.join(allowed)}.",
                       code="unsupported_media_type")
    return media_type


def parse_model(raw: bytes, model: type[RequestModelT]) -> RequestModelT:
    """A JSON body as its request model; a 400 naming the field otherwise."""
    try:
        document = strict_json.parse(raw)
    except strict_json.JsonSyntaxError as exc:
        raise strict_json.syntax_error(exc, field_names(model)) from None
    return validate(model, document)


async def off_loop_if_large(raw: bytes, work: Callable[..., ResultT], *args: Any) -> ResultT:
    """work(raw, *args), in a thread when raw is large."""
    if len(raw) > PARSE_IN_THREAD_BYTES:
        return await asyncio.to_thread(work, raw, *args)
    return work(raw, *args)


async def read_model(request: Request, model: type[RequestModelT],
                     max_bytes: int) -> RequestModelT:
    """The JSON body of a request, validated by its model."""
    require_media_type(request, "application/json")
    raw = await read_body(request, max_bytes)
    parsed: RequestModelT = await off_loop_if_large(raw, parse_model, model)
    return parsed
