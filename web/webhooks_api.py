"""GET /v1/webhooks/secret: the caller's signing secret, to verify the webhooks it receives."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from web.auth import principal_of
from web.routing import services_of


async def webhook_secret(request: Request) -> JSONResponse:
    """Each API key has its own secret; with auth off, the one principal's (or the operator's)."""
    secret = services_of(request).webhooks.secrets.secret_for(principal_of(request).id)
    return JSONResponse({"object": "webhook_secret", "secret": secret},
                        headers={"Cache-Control": "no-store"})


routes = [Route("/v1/webhooks/secret", webhook_secret, methods=["GET"])]
