"""Capability URLs: GET /i/{token}.{ext} until expiry, DELETE to remove now."""

from __future__ import annotations

import math
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagegen.encode import CONTENT_TYPES
from web.errors import ApiError
from web.routing import services_of

EXPIRED = ApiError(404, "This image does not exist or has expired.", code="image_not_found")
# Images are private to whoever holds the link, and must not leak it onwards.
PRIVATE_HEADERS = {"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


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
    headers = {
        **PRIVATE_HEADERS,
        "Cache-Control": f"private, max-age={seconds_left}",
        "Expires": formatdate(artifact.expires_at, usegmt=True),
    }
    return Response(data, media_type=artifact.content_type, headers=headers)


async def delete_image(request: Request) -> Response:
    if not await services_of(request).store.delete(_token(request)):
        raise EXPIRED
    return Response(status_code=204)


routes = [
    Route("/i/{token}.{ext}", get_image, methods=["GET", "HEAD"]),
    Route("/i/{token}.{ext}", delete_image, methods=["DELETE"]),
]
