"""API keys at the door of /v1: who is calling, and one more request this minute.

With IMAGEGEN_AUTH=keys every /v1 call needs `Authorization: Bearer <key>`;
the demo page's own calls carry its cookie instead and act as the built-in
demo principal. Every POST under /v1 asks for work and counts against the
caller's requests per minute (reads, polls and cancels do not). With keys on,
/metrics is the operator's: it needs the admin token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.container import Services
from service.tenancy import KeyRejected, Principal
from web.admin import require_admin
from web.errors import ApiError, api_error_for, error_response
from web.request_log import log_fields

# Set by the demo page; not a secret: the demo principal is open to every visitor.
DEMO_COOKIE = "imagegen_demo"


def principal_of(request: Request) -> Principal:
    """The caller of a /v1 route, as the Authentication middleware found it."""
    principal: Principal = request.scope["state"]["principal"]
    return principal


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authentication:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                await self._check(request)
            except Exception as exc:
                if isinstance(exc, KeyRejected) and exc.key_id is not None:
                    log_fields(request, key_id=exc.key_id)
                error = exc if isinstance(exc, ApiError) else api_error_for(exc)
                if error is None:
                    raise
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _check(self, request: Request) -> None:
        services: Services = request.app.state.services
        tenancy = services.tenancy
        path = request.url.path
        if path.startswith("/v1/"):
            demo_visitor = request.cookies.get(DEMO_COOKIE) == "1"
            principal = await tenancy.principal_for(bearer_token(request),
                                                    demo_visitor=demo_visitor)
            request.scope["state"]["principal"] = principal
            log_fields(request, key_id=principal.id)
            if request.method == "POST":
                await tenancy.count_request(principal)
        elif path == "/metrics" and tenancy.keys_required:
            require_admin(request)
