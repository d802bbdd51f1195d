"""Async jobs over HTTP: POST /v1/jobs, GET /v1/jobs/{id}, its SSE events, DELETE to cancel.

What a job is and does lives in service.jobs; this module parses, answers and streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from service.container import Services
from service.generation import GenerationInput, admit, input_log_fields
from service.jobs.runner import IdempotencyKey, Job, JobRunner
from service.jobs.state import TERMINAL_EVENTS, JobEvent
from web.auth import principal_of
from web.body import read_model
from web.errors import bad_request
from web.generation_params import find_model, parse_native
from web.image_inputs import native_inputs
from web.request_log import log_fields, request_id_of
from web.request_models import JobRequest
from web.routing import public_base_url, services_of
from web.webhooks_api import subscribe

# A comment line keeps proxies from closing a quiet stream, and finds dead clients.
HEARTBEAT_SECONDS = 15.0
MAX_IDEMPOTENCY_KEY_CHARS = 255


def jobs_of(request: Request) -> JobRunner:
    return services_of(request).jobs


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def body_hash(body: JobRequest) -> str:
    """The same request hashes the same, whatever its key order, spacing or ignored fields."""
    return sha256_hex(body.model_dump_json().encode())


def idempotency_key_hash(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise bad_request(f"'Idempotency-Key' must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} "
                          "printable characters.", "Idempotency-Key")
    return sha256_hex(key.encode())


def job_id_hash(job_id: str) -> str:
    # Logs carry a hash: the id itself is the capability to read and cancel the job.
    return sha256_hex(job_id.encode())[:16]


def job_links(job: Job) -> dict[str, str]:
    return {"url": f"/v1/jobs/{job.record.id}", "events_url": f"/v1/jobs/{job.record.id}/events"}


def accepted(job: Job, replayed: bool) -> JSONResponse:
    record = job.record
    body = {"id": record.id, "status": record.status.value,
            "queue_position": record.queue_position, **job_links(job)}
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(body, status_code=202, headers=headers)


def parse_job(services: Services, body: JobRequest, owner: str) -> GenerationInput:
    spec = find_model(services.engine.specs, body.model, services.default_model)
    return parse_native(spec, body, body.strength, owner=owner)


async def create_job(request: Request) -> JSONResponse:
    services = services_of(request)
    jobs = services.jobs
    body = await read_model(request, JobRequest, services.settings.max_body_bytes)
    principal = principal_of(request)
    key_hash = idempotency_key_hash(request)
    key = None if key_hash is None else IdempotencyKey(key_hash, body_hash(body), principal.id)
    if key is not None and (earlier := jobs.replay(key)) is not None:
        log_fields(request, job_id_hash=job_id_hash(earlier.record.id))
        return accepted(earlier, replayed=True)
    gen = parse_job(services, body, principal_of(request).id)
    log_fields(request, **input_log_fields(gen))
    ttl = await admit(services, gen, principal)
    inputs = await native_inputs(body, (gen.width, gen.height), services.settings.max_body_bytes)
    assert ttl is not None  # jobs always store their images
    webhook = None if body.webhook is None else await subscribe(
        request, "job", body.webhook.url, body.webhook.events, "webhook.url")
    slot = await services.tenancy.take_slot(principal)
    try:
        # Checked again after the awaits: a twin request may have created the job meanwhile.
        if key is not None and (earlier := jobs.replay(key)) is not None:
            await slot.release()
            return accepted(earlier, replayed=True)
        job = jobs.start(gen, ttl, public_base_url(request), request_id_of(request),
                         init_image=inputs.init_image, mask_image=inputs.mask_image,
                         previews=bool(body.previews), key=key, webhook=webhook,
                         owner=principal, slot=slot)
    except BaseException:
        await slot.release()
        raise
    log_fields(request, job_id_hash=job_id_hash(job.record.id), ttl_seconds=ttl)
    return accepted(job, replayed=False)


async def _job_of(request: Request) -> Job:
    job = jobs_of(request).find(request.path_params["job_id"], principal_of(request).id)
    log_fields(request, job_id_hash=job_id_hash(job.record.id))
    await jobs_of(request).refresh(job)
    return job


async def get_job(request: Request) -> JSONResponse:
    job = await _job_of(request)
    return JSONResponse(job.view())


async def cancel_job(request: Request) -> JSONResponse:
    job = await _job_of(request)
    jobs_of(request).cancel(job)
    # A queued job is canceled now (200); a running one stops at its next step (202).
    status = 200 if job.record.status.ended else 202
    return JSONResponse(job.view(), status_code=status)


def format_event(event: JobEvent) -> str:
    return f"id: {event.seq}\nevent: {event.name}\ndata: {json.dumps(event.data)}\n\n"


def last_event_id(request: Request) -> int:
    value = request.headers.get("last-event-id", "")
    # isdigit() alone passes "²" and other digits int() refuses; an id has at most 19 digits.
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else 0


async def event_stream(jobs: JobRunner, job: Job, after_seq: int) -> AsyncIterator[str]:
    # Subscribing happens when the stream starts, so an unstarted stream holds nothing, and the
    # finally runs on every way out: the end event, a disconnect (cancellation), shutdown.
    subscriber = jobs.subscribe(job, after_seq)
    try:
        # Reconnect soon if the connection drops; Last-Event-ID then skips what was seen.
        yield "retry: 2000\n\n"
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_SECONDS):
                    event = await subscriber.next()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield format_event(event)
            if event.name in TERMINAL_EVENTS:
                return
    finally:
        jobs.unsubscribe(job, subscriber)


async def job_events(request: Request) -> Response:
    job = await _job_of(request)
    after_seq = last_event_id(request)
    if job.record.status.ended and all(e.seq <= after_seq for e in job.record.history):
        # The client has seen the end; 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204)
    return StreamingResponse(
        event_stream(jobs_of(request), job, after_seq),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
]
