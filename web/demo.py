"""The demo pages: plain HTML, CSS and a little JS from the package; no build step."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from web.auth import DEMO_COOKIE
from web.errors import ApiError
from web.routing import services_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# Nothing on the page may come from elsewhere; images are data: previews or our URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self'; script-src 'self'; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _page(request: Request, name: str) -> HTMLResponse:
    tenancy = services_of(request).tenancy
    if tenancy.demo is None:  # IMAGEGEN_DEMO=off
        raise ApiError(404, "Not found.", code="not_found")
    response = HTMLResponse((TEMPLATES / name).read_text(), headers=PAGE_HEADERS)
    if tenancy.keys_required:
        # The page's own /v1 calls (fetch and EventSource alike) then act as the demo principal.
        response.set_cookie(DEMO_COOKIE, "1", path="/v1", httponly=True, samesite="strict")
    return response


async def index(request: Request) -> HTMLResponse:
    return _page(request, "index.html")


async def model_page(request: Request) -> HTMLResponse:
    if request.path_params["name"] not in services_of(request).engine.specs:
        raise ApiError(404, "The model does not exist.", code="model_not_found")
    return _page(request, "model.html")


routes = [
    Route("/", index, methods=["GET"]),
    Route("/models/{name}", model_page, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
