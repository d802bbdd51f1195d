"""Capability URLs: GET /i/{token}.{ext} until expiry, DELETE to remove now."""

from __future__ import annotations

import functools
import math
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from imagegen.encode import CONTENT_TYPES
from web.errors import ApiError
from web.request_log import log_at_debug
from web.routing import services_of
from web.services import Services

EXPIRED = ApiError(404, "This image does not exist or has expired.", code="image_not_found")
# Images are private to whoever holds the link, and must not leak it onwards.
_PRIVATE_HEADERS = [
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]


@functools.lru_cache(maxsize=4096)
def _http_date(epoch_seconds: int) -> bytes:
    """The Expires value; cached, since many fetches share an expiry second."""
    return formatdate(epoch_seconds, usegmt=True).encode()


def _token(request: Request) -> str:
    token = request.path_params["token"]
    if request.path_params["ext"] not in CONTENT_TYPES:
        raise EXPIRED
    return str(token)


class ImageGet:
    """GET and HEAD of an image as a raw ASGI endpoint.

    The most frequent request, so it skips Starlette's Request and Response
    objects and sends prebuilt headers (bench/serving.py compares it with a
    bare Starlette route). Errors are raised as ApiError like anywhere else.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        content_type = CONTENT_TYPES.get(params["ext"])
        services: Services = scope["app"].state.services
        found = None if content_type is None else await services.store.get(params["token"])
        if found is None or found[0].content_type != content_type:
            raise EXPIRED
        artifact, data = found
        seconds_left = max(0, math.floor(artifact.expires_at - services.clock()))
        headers = [
            (b"content-length", b"%d" % len(data)),
            (b"content-type", content_type.encode()),
            *_PRIVATE_HEADERS,
            (b"cache-control", b"private, max-age=%d" % seconds_left),
            (b"expires", _http_date(math.floor(artifact.expires_at))),
        ]
        log_at_debug(scope)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else data
        await send({"type": "http.response.body", "body": body})


async def delete_image(request: Request) -> Response:
    if not await services_of(request).store.delete(_token(request)):
        raise EXPIRED
    return Response(status_code=204)


routes = [
    Route("/i/{token}.{ext}", ImageGet(), methods=["GET", "HEAD"]),
    Route("/i/{token}.{ext}", delete_image, methods=["DELETE"]),
]
