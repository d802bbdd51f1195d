"""Small helpers every route module shares."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from service.container import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def public_base_url(request: Request) -> str:
    """IMAGEGEN_PUBLIC_URL behind a proxy, else the host the client called."""
    configured = services_of(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this path, for a truthful 405 `Allow`.

    Starlette names only the first matching route's methods, and several routes here
    share a path (GET and DELETE of a job are two routes).
    """
    path = request.scope.get("route_path") or request.url.path
    methods = {method for route in request.app.routes
               if isinstance(route, Route) and route.methods
               and route.path_regex.fullmatch(path) for method in route.methods}
    return ", ".join(sorted(methods))
