"""Small helpers every route module shares."""

from __future__ import annotations

from starlette.requests import Request

from service.container import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def public_base_url(request: Request) -> str:
    """IMAGEGEN_PUBLIC_URL behind a proxy, else the host the client called."""
    configured = services_of(request).settings.public_url
    return (configured or str(request.base_url)).rstrip("/")
