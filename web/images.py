"""Capability URLs: GET /i/{token}.{ext} until expiry, DELETE to remove now."""

from __future__ import annotations

import math
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagegen.encode import CONTENT_TYPES
from web.errors import ApiError
from web.routing import services_of

EXPIRED = ApiError(404, "This image does not exist or has expired.", code="image_not_found")
# Images are private to whoever holds the link, and must not leak it onwards.
_PRIVATE_RAW_HEADERS = [
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _token(request: Request) -> str:
    token = request.path_params["token"]
    if request.path_params["ext"] not in CONTENT_TYPES:
        raise EXPIRED
    return str(token)


async def get_image(request: Request) -> Response:
    services = services_of(request)
    found = await services.store.get(_token(request))
    if found is None or found[0].content_type != CONTENT_TYPES[request.path_params["ext"]]:
        raise EXPIRED
    artifact, data = found
    seconds_left = max(0, math.floor(artifact.expires_at - services.clock()))
    response = Response(data, media_type=artifact.content_type)
    # Raw headers, not a dict: this is the most frequent request (bench/serving.py).
    response.raw_headers += [
        *_PRIVATE_RAW_HEADERS,
        (b"cache-control", b"private, max-age=%d" % seconds_left),
        (b"expires", http_date(artifact.expires_at).encode()),
    ]
    return response


def http_date(timestamp: float) -> str:
    """RFC 9110 IMF-fixdate, as email.utils.formatdate(usegmt=True) but without its detours."""
    t = time.gmtime(timestamp)
    return (f"{_WEEKDAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


async def delete_image(request: Request) -> Response:
    if not await services_of(request).store.delete(_token(request)):
        raise EXPIRED
    return Response(status_code=204)


routes = [
    Route("/i/{token}.{ext}", get_image, methods=["GET", "HEAD"]),
    Route("/i/{token}.{ext}", delete_image, methods=["DELETE"]),
]
