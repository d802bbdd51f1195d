"""Bulk generation: POST /v1/batches, GET /v1/batches/{id}, its output, DELETE to cancel."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.bulk.runner import BulkRunner
from service.bulk.state import Batch
from web.auth import principal_of
from web.body import off_loop_if_large, read_body, require_media_type
from web.bulk_parse import MAX_BATCH_LINES, TOO_MANY_LINES, parse_batch
from web.request_models import BatchWebhookQuery, validate
from web.routing import public_base_url, services_of
from web.webhooks_api import subscribe

BATCH_MEDIA_TYPES = ("application/jsonl", "application/x-ndjson", "application/json")
# The output lists capability URLs: no caching, and never passed on as a referrer.
OUTPUT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                  "X-Content-Type-Options": "nosniff"}


def runner_of(request: Request) -> BulkRunner:
    return services_of(request).bulk


async def find_batch(request: Request) -> Batch:
    return await runner_of(request).find(request.path_params["batch_id"],
                                         principal_of(request).id)


def webhook_query(request: Request) -> BatchWebhookQuery:
    """?webhook_url=...&webhook_events=started,completed (events comma-separated)."""
    params = request.query_params
    events = params.get("webhook_events")
    return validate(BatchWebhookQuery, {
        "webhook_url": params.get("webhook_url"),
        "webhook_events": None if events is None else events.split(",")})


async def create_batch(request: Request) -> JSONResponse:
    services = services_of(request)
    require_media_type(request, *BATCH_MEDIA_TYPES)
    query = webhook_query(request)
    raw = await read_body(request, services.settings.max_body_bytes,
                          line_limit=(MAX_BATCH_LINES, TOO_MANY_LINES))
    lines = await off_loop_if_large(raw, parse_batch, services, principal_of(request).id)
    webhook = None
    if query.webhook_url is not None:
        webhook = await subscribe(request, "batch", query.webhook_url, query.webhook_events,
                                  "webhook_url")
    batch = await runner_of(request).submit(lines, public_base_url(request), webhook,
                                            owner=principal_of(request))
    return JSONResponse(batch.to_dict(), status_code=202)


async def get_batch(request: Request) -> JSONResponse:
    return JSONResponse((await find_batch(request)).to_dict())


async def get_output(request: Request) -> Response:
    batch = await find_batch(request)
    body = await runner_of(request).output(batch)
    return Response(body, media_type="application/jsonl", headers=OUTPUT_HEADERS)


async def cancel_batch(request: Request) -> JSONResponse:
    batch = await find_batch(request)
    await runner_of(request).cancel(batch)
    return JSONResponse(batch.to_dict())


routes = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}", cancel_batch, methods=["DELETE"]),
    Route("/v1/batches/{batch_id}/output", get_output, methods=["GET"]),
]
