"""Health, readiness, metrics and the live privacy manifest."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.container import Services
from web.request_log import ALLOWED_FIELDS
from web.routing import services_of

# A batch running longer than this makes the worker count as stuck.
STUCK_AFTER_FACTOR = 1.5


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def worker_healthy(services: Services) -> bool:
    return services.engine.healthy(services.settings.request_timeout * STUCK_AFTER_FACTOR)


async def readiness(services: Services) -> dict[str, bool]:
    return {
        "models_loaded": bool(services.engine.pipelines),
        # Placed on their devices, compiled ones warmed up at every size and batch bucket.
        "models_warm": services.engine.warm,
        "worker_healthy": worker_healthy(services),
        "store_reachable": await services.store.ping(),
        "accepting_work": not services.draining,
    }


async def readyz(request: Request) -> JSONResponse:
    checks = await readiness(services_of(request))
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    services = services_of(request)
    stats = await services.store.stats()
    m = services.metrics
    m.queue_depth.set(services.engine.queue_depth())
    m.store_bytes.set(stats.bytes)
    m.store_count.set(stats.count)
    m.expired_reads.set(stats.expired_total)
    m.swept.set(stats.swept_total)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


STORE_MEDIUM = {
    "memory": "process memory of this server only; lost on restart",
    "disk": "local disk, each image encrypted (AES-GCM) with a key held only in memory; "
            "unreadable after a restart and removed at start-up",
    "redis": "the memory of a shared Redis server, which expires images itself; run it with "
             "persistence off (--save '' --appendonly no) so images never reach its disk",
}


def tenancy_manifest(services: Services) -> dict[str, object]:
    shared = services.settings.shared_redis_url is not None
    return {
        "required": services.tenancy.keys_required,
        "stored": "a SHA-256 hash of each key (never the key), its id, name, models, limits, "
                  "and when it was created, expires and was revoked",
        "medium": "the shared Redis server" if shared else "a keys file of hashes, mode 0600",
        "kept": "until the operator removes it; a revoked key stays listed as revoked",
        "logged": "the key's id only",
    }


async def privacy(request: Request) -> JSONResponse:
    services = services_of(request)
    shared = services.settings.shared_redis_url is not None
    policy = await services.retention.get()
    store = services.store
    return JSONResponse({
        "inputs": {"written_to_disk": False,
                   "held": "in memory for the life of the request only",
                   "except": "bulk batch lines, held encrypted on disk (see bulk)"},
        "outputs": {
            "kept": "generated images only, until their TTL",
            "default_ttl_seconds": policy.default_ttl_seconds,
            "max_ttl_seconds": policy.max_ttl_seconds,
            "models": {name: {"default_ttl_seconds": policy.for_model(name).default_ttl_seconds,
                              "max_ttl_seconds": policy.for_model(name).max_ttl_seconds}
                       for name in services.engine.specs},
            "expiry_checked_on_every_read": True,
            "sweep_interval_seconds": services.settings.sweep_interval,
            "b64_json_responses_stored": False,
            "metadata_in_files": False,
        },
        "store": {"backend": store.backend, "writes_to_disk": store.writes_to_disk,
                  "medium": STORE_MEDIUM[store.backend]},
        "logs": {"fields": sorted(ALLOWED_FIELDS | {"request_id", "method", "route", "status",
                                                    "duration_ms"}),
                 "content_logged": False},
        "capability_urls": {"token_bits": 192, "store_keyed_by": "sha256 of the token"},
        "outbound_calls": False,
        "api_keys": tenancy_manifest(services),
        "usage": {"kept": "per key, day and model: requests, images, device seconds and cost; "
                          "never a prompt or an image",
                  "retention_days": services.settings.usage_retention_days,
                  "medium": "the shared Redis server" if shared else
                            "process memory of this server only; lost on restart"},
        "bulk": {"inputs_on_disk": "encrypted, until the batch has run",
                 "encrypted_at_rest": "AES-GCM, one key per batch, in memory only",
                 "unreadable_after_restart": True,
                 "retention_seconds": policy.batch_retention_seconds},
    })


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/privacy", privacy, methods=["GET"]),
]
