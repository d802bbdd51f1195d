"""API keys and usage over HTTP: /admin/keys, /admin/usage (operator), /v1/usage (caller)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.tenancy import Limits
from web.admin import require_admin
from web.auth import principal_of
from web.body import read_model
from web.errors import bad_request
from web.request_models import KeyCreate
from web.routing import services_of

log = logging.getLogger("imagegen.audit")

MAX_KEY_BODY_BYTES = 16 * 1024
# A response with a key in it is never cached anywhere.
NO_STORE = {"Cache-Control": "no-store"}


async def create_key(request: Request) -> JSONResponse:
    actor = require_admin(request)
    services = services_of(request)
    body = await read_model(request, KeyCreate, MAX_KEY_BODY_BYTES)
    try:
        limits = Limits(body.requests_per_minute, body.max_concurrent,
                        body.device_seconds_per_day)
        record, key = await services.tenancy.issue_key(
            name=body.name, models=body.models, expires_at=body.expires_at,
            limits=limits, known_models=services.engine.specs)
    except ValueError as exc:
        # The validator's messages start with the field's name and quote nothing secret.
        raise bad_request(str(exc) + ".", str(exc).split(" ")[0]) from None
    log.info("api key created", extra={"fields": {"key_id": record.id, "actor": actor}})
    return JSONResponse({**record.public(), "key": key}, status_code=201, headers=NO_STORE)


async def list_keys(request: Request) -> JSONResponse:
    require_admin(request)
    keys = await services_of(request).tenancy.list_keys()
    return JSONResponse({"object": "list", "data": [key.public() for key in keys]})


async def revoke_key(request: Request) -> JSONResponse:
    actor = require_admin(request)
    record = await services_of(request).tenancy.revoke_key(request.path_params["key_id"])
    log.info("api key revoked", extra={"fields": {"key_id": record.id, "actor": actor}})
    return JSONResponse(record.public())


async def all_usage(request: Request) -> JSONResponse:
    require_admin(request)
    rows = await services_of(request).tenancy.usage_report(None)
    return JSONResponse({"object": "list", "data": rows})


async def own_usage(request: Request) -> JSONResponse:
    principal = principal_of(request)
    rows = await services_of(request).tenancy.usage_report(principal.id)
    return JSONResponse({"object": "list", "key_id": principal.id,
                         "data": [{k: v for k, v in row.items() if k != "key_id"}
                                  for row in rows]})


routes = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/usage", all_usage, methods=["GET"]),
    Route("/v1/usage", own_usage, methods=["GET"]),
]
