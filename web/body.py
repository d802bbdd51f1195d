"""Reading request bodies in memory, with a hard cap, never spooling to disk."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from web.errors import ApiError


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as it grows past max_bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"The request body is larger than {max_bytes} bytes.",
                       code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"The request body is larger than {max_bytes} bytes.",
                           code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def require_media_type(request: Request, *allowed: str) -> str:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in allowed:
        raise ApiError(415, f"Content-Type must be {' or '.join(allowed)}.",
                       code="unsupported_media_type")
    return media_type


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    require_media_type(request, "application/json")
    body = await read_body(request, max_bytes)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(document, dict):
        raise ApiError(400, "The body must be a JSON object.", code="invalid_json")
    return document
