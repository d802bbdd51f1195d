"""Capability URLs: GET /i/{token}.{ext} until expiry, DELETE to remove now."""

from __future__ import annotations

import functools
import math
import re
import time
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegen.encode import CONTENT_TYPES
from service.container import Services
from store.artifact import Artifact
from web.errors import ApiError
from web.request_log import log_at_debug, new_request_id, request_done
from web.routing import services_of

IMAGE_ROUTE = "/i/{token}.{ext}"
# IMAGE_ROUTE as Starlette's router matches it (each parameter: one or more of [^/]).
_IMAGE_PATH = re.compile(r"/i/([^/]+)\.([^/]+)")
_ENCODED = {content_type: content_type.encode() for content_type in CONTENT_TYPES.values()}
Header = tuple[bytes, bytes]
_LOOKUP = "image_lookup"  # where a request's store answer is kept, in its scope's state
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


async def _find_image(scope: Scope, services: Services, token: str, ext: str
                      ) -> tuple[list[Header], bytes] | None:
    """(response headers, bytes) of the image a path names, or None: unknown,
    expired, or asked for under another extension than it was stored with."""
    content_type = CONTENT_TYPES.get(ext)
    if content_type is None:
        return None
    found = await _look_up(scope, services, token)
    if found is None or found[0].content_type != content_type:
        return None
    artifact, data = found
    seconds_left = max(0, math.floor(artifact.expires_at - services.clock()))
    headers = [
        (b"content-length", b"%d" % len(data)),
        (b"content-type", _ENCODED[content_type]),
        *_PRIVATE_HEADERS,
        (b"cache-control", b"private, max-age=%d" % seconds_left),
        (b"expires", _http_date(math.floor(artifact.expires_at))),
    ]
    return headers, data


async def _look_up(scope: Scope, services: Services, token: str) -> tuple[Artifact, bytes] | None:
    """The store's answer for this request's token, asked once even if both
    ImageHits and ImageGet see the request (an expired read counts once)."""
    state = scope.setdefault("state", {})
    if _LOOKUP not in state:
        try:
            state[_LOOKUP] = await services.store.get(token)
        except Exception as exc:
            state[_LOOKUP] = exc
    answer: tuple[Artifact, bytes] | Exception | None = state[_LOOKUP]
    if isinstance(answer, Exception):
        raise answer
    return answer


async def _send_image(scope: Scope, send: Send, headers: list[Header], data: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})


class ImageGet:
    """GET and HEAD of an image: the routed endpoint, which answers misses (404).

    Hits are answered earlier, by ImageHits, except behind a root path, where
    that declines and this answers them the same way.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        services: Services = scope["app"].state.services
        image = await _find_image(scope, services, params["token"], params["ext"])
        if image is None:
            raise EXPIRED
        log_at_debug(scope)
        await _send_image(scope, send, *image)


class ImageHits:
    """Middleware that answers image hits before the router and the other middleware.

    An image GET is the most frequent request and its own work is a dictionary
    lookup, so the generic layers (request-log wrapper, exception middleware,
    route matching) were most of its cost (bench/serving.py). Anything but a hit
    (a miss, a store error, another method) goes on to the app, which answers it
    as any other request. A hit still gets its request id, count and log line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") \
                and not scope.get("root_path"):
            match = _IMAGE_PATH.fullmatch(scope["path"])
            if match is not None and await self._serve_hit(scope, send, *match.groups()):
                return
        await self.app(scope, receive, send)

    async def _serve_hit(self, scope: Scope, send: Send, token: str, ext: str) -> bool:
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is None:
            return False
        started = time.perf_counter()
        try:
            image = await _find_image(scope, services, token, ext)
        except Exception:
            return False  # the app answers it with its error handling (503)
        if image is None:
            return False
        headers, data = image
        request_id = new_request_id()
        headers.append((b"x-request-id", request_id.encode()))
        log_at_debug(scope)
        try:
            await _send_image(scope, send, headers, data)
        finally:
            request_done(scope, request_id, IMAGE_ROUTE, 200, started)
        return True


async def delete_image(request: Request) -> Response:
    if not await services_of(request).store.delete(_token(request)):
        raise EXPIRED
    return Response(status_code=204)


routes = [
    Route(IMAGE_ROUTE, ImageGet(), methods=["GET", "HEAD"]),
    Route(IMAGE_ROUTE, delete_image, methods=["DELETE"]),
]
