"""create_app(settings): the Starlette app; its lifespan starts and stops the service."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from service.container import PipelineWrapper, open_services
from service.settings import Settings
from store import Clock
from web import (
    admin,
    batches,
    demo,
    edits,
    images,
    jobs,
    loras,
    native_api,
    openai_api,
    openapi,
    ops,
    tenancy_api,
    webhooks_api,
)
from web.auth import Authentication
from web.body_limits import BodyBudget, BodyLimits
from web.errors import exception_handlers
from web.request_log import RequestLogMiddleware


def body_budget(settings: Settings) -> BodyBudget:
    return BodyBudget(max_receiving=settings.max_receiving_bodies,
                      max_buffered_bytes=settings.max_buffered_body_bytes,
                      max_body_bytes=settings.max_body_bytes, timeout=settings.client_timeout)


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    wrap_pipeline: PipelineWrapper | None = None,
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await open_services(settings, clock, wrap_pipeline)
        app.state.services = services
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    routes = [*images.routes, *openai_api.routes, *edits.routes, *native_api.routes,
              *jobs.routes, *admin.routes, *ops.routes, *openapi.routes, *demo.routes,
              *batches.routes, *tenancy_api.routes, *webhooks_api.routes, *loras.routes]
    return Starlette(
        routes=routes,
        # ImageHits first: it answers image hits before the other layers.
        # Authentication after the request log: refusals are logged, with the key id.
        middleware=[Middleware(images.ImageHits), Middleware(RequestLogMiddleware),
                    Middleware(BodyLimits, budget=body_budget(settings)),
                    Middleware(Authentication)],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )

