"""Webhooks over HTTP: subscribing a job's or batch's, and GET /v1/webhooks/secret."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.webhooks import Subscription, WebhookRefused
from web.auth import principal_of
from web.errors import bad_request
from web.routing import services_of


async def subscribe(request: Request, kind: str, url: str, events: Iterable[str] | None,
                    param: str) -> Subscription:
    """The caller's webhook for a new job or batch; a URL not to be called is a 400 on `param`."""
    try:
        return await services_of(request).webhooks.subscribe(kind, url, events or (),
                                                            principal_of(request))
    except WebhookRefused as exc:
        raise bad_request(str(exc), param) from None


async def webhook_secret(request: Request) -> JSONResponse:
    """Each API key has its own secret; with auth off, the one principal's (or the operator's)."""
    secret = services_of(request).webhooks.secrets.secret_for(principal_of(request))
    return JSONResponse({"object": "webhook_secret", "secret": secret},
                        headers={"Cache-Control": "no-store"})


routes = [Route("/v1/webhooks/secret", webhook_secret, methods=["GET"])]
