"""create_app(settings): the Starlette app; its lifespan wires models, worker, store, sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware

from imagegen.encode import Encoder
from imagegen.engine import Engine
from imagegen.pipelines.base import TextToImagePipeline
from imagegen.registry import EMBEDDED_MODEL_NAME, load_pipeline, load_specs
from store import Clock, create_retention_holder, create_store
from store.retention import RetentionPolicy
from store.sweeper import Sweeper
from web import admin, batches, demo, edits, images, jobs, native_api, openai_api, openapi, ops
from web.bulk_runner import BulkRunner
from web.errors import exception_handlers
from web.metrics import Metrics
from web.request_log import RequestLogMiddleware
from web.services import Services
from web.settings import Settings

# Wraps each loaded pipeline; tests use it to inject faults a CPU cannot produce.
PipelineWrapper = Callable[[str, TextToImagePipeline], TextToImagePipeline]


def initial_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        default_ttl_seconds=float(settings.ttl),
        max_ttl_seconds=float(settings.max_ttl),
        models={},
        batch_retention_seconds=float(settings.batch_retention),
    )


def load_engine(settings: Settings, metrics: Metrics,
                wrap: PipelineWrapper | None) -> Engine:
    specs = load_specs(settings.models)
    pipelines: Mapping[str, TextToImagePipeline] = {
        name: load_pipeline(spec) for name, spec in specs.items()}
    if wrap is not None:
        pipelines = {name: wrap(name, pipeline) for name, pipeline in pipelines.items()}
    return Engine(specs, pipelines, settings.queue_size, on_batch=metrics.batch_done,
                  batch_wait=settings.batch_wait)


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    wrap_pipeline: PipelineWrapper | None = None,
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics = Metrics()
        engine = await asyncio.to_thread(load_engine, settings, metrics, wrap_pipeline)
        store = create_store(settings.store, max_bytes=settings.store_max_bytes, clock=clock,
                             directory=settings.store_dir, redis_url=settings.redis_url)
        # Replicas sharing a Redis store share the policy too: a change on one applies on all.
        shared_url = settings.redis_url if settings.store == "redis" else None
        retention = create_retention_holder(initial_policy(settings), redis_url=shared_url)
        sweeper = Sweeper(store, settings.sweep_interval, clock)
        sweeper.lag_observer = metrics.deletion_lag.observe
        services = Services(settings=settings, engine=engine, store=store,
                            retention=retention, sweeper=sweeper, encoder=Encoder(),
                            metrics=metrics, clock=clock,
                            default_model=EMBEDDED_MODEL_NAME)
        app.state.services = services
        await retention.start()
        engine.start()
        sweeper.start()
        bulk = await BulkRunner.start(services)
        try:
            yield
        finally:
            # Drain: refuse new work, let what is queued and running finish.
            services.draining = True
            await bulk.stop()  # between lines; batches do not outlive the process
            await asyncio.to_thread(engine.stop)
            sweeper.shutdown()
            await retention.stop()
            await store.close()
            services.encoder.shutdown()

    routes = [*images.routes, *openai_api.routes, *edits.routes, *native_api.routes,
              *jobs.routes, *admin.routes, *ops.routes, *openapi.routes, *demo.routes,
              *batches.routes]
    return Starlette(
        routes=routes,
        # ImageHits first: it answers image hits before the other layers.
        middleware=[Middleware(images.ImageHits), Middleware(RequestLogMiddleware)],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )

