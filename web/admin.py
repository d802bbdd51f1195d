"""Operator routes, behind IMAGEGEN_ADMIN_TOKEN (off entirely when no token is set)."""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from store.retention import RetentionPolicy
from web.body import read_model
from web.errors import ApiError, bad_request
from web.generation_params import find_model
from web.ops import worker_healthy
from web.request_models import RetentionUpdate
from web.routing import services_of

NOT_FOUND = ApiError(404, "Not found.", code="not_found")
MAX_POLICY_BYTES = 64 * 1024

audit = logging.getLogger("imagegen.audit")


def require_admin(request: Request) -> str:
    """Return who is acting, for the audit line; 404 / 401 / 403 otherwise."""
    expected = services_of(request).settings.admin_token
    if not expected:
        raise NOT_FOUND
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise ApiError(401, "An admin bearer token is required.", code="unauthorized",
                       error_type="authentication_error",
                       headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ApiError(403, "The admin token is not valid.", code="forbidden",
                       error_type="permission_error")
    client = request.client.host if request.client else "unknown"
    return f"admin@{client}"


async def get_retention(request: Request) -> JSONResponse:
    require_admin(request)
    policy = await services_of(request).retention.get()
    return JSONResponse({**policy.to_dict(), "apply_to_existing": False})


async def put_retention(request: Request) -> JSONResponse:
    actor = require_admin(request)
    services = services_of(request)
    body = await read_model(request, RetentionUpdate, MAX_POLICY_BYTES)
    if body.models is not None and (unknown := set(body.models) - set(services.engine.specs)):
        # Limits of a model that does not exist would be stored, echoed and audited for nothing.
        raise bad_request(f"'models' names {len(unknown)} model(s) this service does not "
                          "serve; GET /v1/models lists them.", "models")
    apply_to_existing = bool(body.apply_to_existing)
    changes = body.model_dump(exclude_none=True, exclude={"apply_to_existing"})
    current = await services.retention.get()
    try:
        policy = RetentionPolicy.from_dict(changes, base=current)
    except ValueError as exc:
        # Messages of the policy parser name fields and numbers only.
        raise bad_request(str(exc), str(exc).split(" ")[0]) from None
    shortened = await services.change_retention(policy, actor, apply_to_existing)
    return JSONResponse({**policy.to_dict(), "apply_to_existing": apply_to_existing,
                         "shortened": shortened})


async def get_stats(request: Request) -> JSONResponse:
    require_admin(request)
    services = services_of(request)
    stats = await services.store.stats()
    sweeper = services.sweeper
    return JSONResponse({
        "store": {"backend": services.store.backend, "count": stats.count,
                  "bytes": stats.bytes, "max_bytes": stats.max_bytes,
                  "expired_reads": stats.expired_total, "swept": stats.swept_total},
        "sweeper": {"interval_seconds": services.settings.sweep_interval,
                    "last_sweep_at": sweeper.last_sweep_at,
                    "last_max_lag_seconds": sweeper.last_max_lag_seconds},
        "queue_depth": services.engine.queue_depth(),
        "devices": services.engine.devices(),
        "worker_healthy": worker_healthy(services),
        # The clock last_sweep_at is read from, so the two can be compared.
        "time": services.clock(),
    })


async def load_model(request: Request) -> JSONResponse:
    """Move a model into device memory now, evicting the least recently used if needed."""
    return await _move_model(request, "load")


async def offload_model(request: Request) -> JSONResponse:
    """Move a model out to CPU RAM now; its next request brings it back."""
    return await _move_model(request, "offload")


async def _move_model(request: Request, action: str) -> JSONResponse:
    actor = require_admin(request)
    engine = services_of(request).engine
    spec = find_model(engine.specs, request.path_params["name"], "")
    move = engine.load_model if action == "load" else engine.offload_model
    # Blocking: it waits for the batch on the device, then moves the weights.
    await asyncio.to_thread(move, spec.name)
    audit.info("model %s: %s by %s", spec.name, action, actor,
               extra={"fields": {"model": spec.name, "action": action, "actor": actor}})
    return JSONResponse({"id": spec.name, "state": engine.model_state(spec.name)})


routes = [
    Route("/admin/retention", get_retention, methods=["GET"]),
    Route("/admin/retention", put_retention, methods=["PUT"]),
    Route("/admin/stats", get_stats, methods=["GET"]),
    Route("/admin/models/{name}/load", load_model, methods=["POST"]),
    Route("/admin/models/{name}/offload", offload_model, methods=["POST"]),
]
