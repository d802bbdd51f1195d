"""Async jobs: POST /v1/jobs, GET /v1/jobs/{id}, its SSE events, DELETE to cancel.

A job is one generation whose caller does not wait on the connection. The
registry (one per app, in `services.extras`) keeps each job's record in
memory until its images expire; a lazily started watcher task follows queue
positions and starts, and purges expired records. Progress arrives on the
worker thread and is handed to the event loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from imagegen.batcher import Ticket
from imagegen.types import Progress
from imagegen.worker import JobCanceled
from service.container import Services
from service.errors import failure_of
from service.generation import (
    GenerationInput,
    admit,
    deliver,
    submit,
    to_request,
    wait_for_result,
)
from web.body import read_model
from web.errors import ApiError, bad_request
from web.generation_params import find_model, parse_native
from web.image_inputs import ImageInputs, native_inputs
from web.job_state import TERMINAL_EVENTS, JobEvent, JobRecord
from web.request_log import log_fields, request_id_of
from web.request_models import JobRequest
from web.routing import public_base_url, services_of

log = logging.getLogger("imagegen.jobs")

REGISTRY_KEY = "jobs"
# How often the watcher looks at queue positions while jobs are waiting or running.
ACTIVE_TICK_SECONDS = 0.05
# How often it purges expired records when nothing is active.
IDLE_TICK_SECONDS = 1.0
# A comment line keeps proxies from closing a quiet stream, and finds dead clients.
HEARTBEAT_SECONDS = 15.0
MAX_IDEMPOTENCY_KEY_CHARS = 255
NOT_FOUND = ApiError(404, "The job does not exist or has expired.", code="job_not_found")


class Subscriber:
    """One SSE connection's pending events; consecutive progress events collapse into the last.

    So a slow client holds at most one event of each kind, however many steps it missed.
    """

    def __init__(self, replay: list[JobEvent]) -> None:
        self._pending: deque[JobEvent] = deque()
        self._ready = asyncio.Event()
        for event in replay:
            self.push(event)

    def push(self, event: JobEvent) -> None:
        if event.name == "progress" and self._pending and self._pending[-1].name == "progress":
            self._pending[-1] = event
        else:
            self._pending.append(event)
        self._ready.set()

    async def next(self) -> JobEvent:
        await self._ready.wait()
        event = self._pending.popleft()
        if not self._pending:
            self._ready.clear()
        return event


@dataclass(eq=False, slots=True)
class Job:
    record: JobRecord
    # The queued or running request (it carries the prompt); released when the job ends.
    ticket: Ticket | None = None
    subscribers: set[Subscriber] = field(default_factory=set)


class JobRegistry:
    """Every job of one app; used from the event loop only (the worker thread goes through it)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.jobs: dict[str, Job] = {}
        # sha256 of an Idempotency-Key -> (job id, sha256 of the body it came with)
        self.idempotency: dict[str, tuple[str, str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.record.expired(self.services.clock()):
            return None
        self.observe(job)
        return job

    def replay(self, key_hash: str, body_hash: str) -> Job | None:
        """The job an earlier request with this key made; 409 when its body differed."""
        known = self.idempotency.get(key_hash)
        if known is None:
            return None
        job = self.get(known[0])
        if job is None:
            return None
        if known[1] != body_hash:
            raise ApiError(409, "This Idempotency-Key was used with a different body.",
                           param="Idempotency-Key", code="idempotency_key_reused")
        return job

    def start(self, gen: GenerationInput, inputs: ImageInputs, ttl: float, base_url: str,
              request_id: str, previews: bool, key: tuple[str, str] | None) -> Job:
        """Queue the generation as a new job (QueueFull -> 429 leaves nothing behind)."""
        loop = asyncio.get_running_loop()
        record = JobRecord(id="job_" + secrets.token_urlsafe(24), model=gen.model,
                           created_at=self.services.clock(), ttl_seconds=ttl)
        job = Job(record)
        request = to_request(gen, request_id, inputs.init_image, inputs.mask_image,
                             want_previews=previews)
        job.ticket = submit(self.services, request, on_progress=self._progress_hook(job, loop))
        self.jobs[record.id] = job
        if key is not None:
            self.idempotency[key[0]] = (record.id, key[1])
        position = job.ticket.position
        self.publish(job, record.queued(position) if position is not None else record.started())
        # The job's own copy of the input keeps no prompt; only the worker's request does
        # (with any init image and mask), and the job lets go of it when it ends.
        kept = dataclasses.replace(gen, prompt="", negative_prompt=None)
        self._spawn(self._run(job, kept, ttl, base_url))
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch())
        return job

    def cancel(self, job: Job) -> bool:
        """Cancel a queued or running job; False when it has already ended."""
        ticket = job.ticket
        if ticket is None or ticket.future.done():
            return False
        self.observe(job)
        job.record.cancel_requested = True
        self.services.engine.cancel(ticket)
        if ticket.future.done():  # it was still queued: it never runs
            self._end(job, job.record.canceled(self.services.clock()))
        return True

    def subscribe(self, job: Job, after_seq: int) -> Subscriber:
        """Listen from now on, after a replay of the state so far (no await: nothing is missed)."""
        subscriber = Subscriber([e for e in job.record.history if e.seq > after_seq])
        job.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, job: Job, subscriber: Subscriber) -> None:
        job.subscribers.discard(subscriber)

    def subscriber_count(self) -> int:
        return sum(len(job.subscribers) for job in self.jobs.values())

    def publish(self, job: Job, events: list[JobEvent]) -> None:
        for event in events:
            for subscriber in job.subscribers:
                subscriber.push(event)

    def purge(self, now: float) -> list[str]:
        """Forget the records whose images have expired; returns their ids."""
        gone = [job_id for job_id, job in self.jobs.items() if job.record.expired(now)]
        for job_id in gone:
            del self.jobs[job_id]
        if gone:
            dropped = set(gone)
            self.idempotency = {key: value for key, value in self.idempotency.items()
                                if value[0] not in dropped}
        return gone

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _progress_hook(self, job: Job,
                       loop: asyncio.AbstractEventLoop) -> Callable[[Progress], None]:
        def on_progress(progress: Progress) -> None:
            # Runs on the worker thread, inside a batch shared with other requests: never raise.
            try:
                preview = None if progress.preview is None else preview_data_url(progress.preview)
                # Pipelines count steps from 0; a job reports steps done, 1..total.
                loop.call_soon_threadsafe(self._progressed, job, progress.step + 1,
                                          progress.total, preview)
            except Exception as exc:  # e.g. the loop closed during shutdown
                log.warning("progress dropped", extra={"error_type": type(exc).__name__})

        return on_progress

    def _progressed(self, job: Job, step: int, total: int, preview: str | None) -> None:
        self.publish(job, job.record.progressed(step, total, preview))

    async def _run(self, job: Job, gen: GenerationInput, ttl: float, base_url: str) -> None:
        assert job.ticket is not None
        services = self.services
        try:
            result = await wait_for_result(services, job.ticket)
            generated = await deliver(services, gen, result, ttl, base_url, 0.0)
        except JobCanceled:
            self._end(job, job.record.canceled(services.clock()))
        except Exception as exc:
            failure = failure_of(exc)
            log.warning("job failed", extra={"error_type": type(exc).__name__})
            code, message = (("internal_error", "The job failed.") if failure is None
                             else (failure.code, failure.message))
            self._end(job, job.record.failed(code, message, services.clock()))
        else:
            shown = [{"url": image.url, "expires_at": image.expires_at}
                     for image in generated.images]
            self._end(job, job.record.succeeded(shown, result.seed, result.device_seconds,
                                                services.clock()))

    def _end(self, job: Job, events: list[JobEvent]) -> None:
        job.ticket = None
        self.publish(job, events)

    async def _watch(self) -> None:
        """Follow queue positions and starts; purge expired records; stop when nothing is left."""
        while self.jobs:
            self.purge(self.services.clock())
            active = [job for job in self.jobs.values() if job.ticket is not None]
            for job in active:
                self.observe(job)
            if self.services.draining and not active:
                return
            await asyncio.sleep(ACTIVE_TICK_SECONDS if active else IDLE_TICK_SECONDS)

    def observe(self, job: Job) -> None:
        """Bring an active job's record up to date with the queue (no-op once it has ended)."""
        ticket = job.ticket
        if ticket is None:
            return
        if ticket.started:
            self.publish(job, job.record.started())
            return
        position = ticket.position
        if position is not None:
            self.publish(job, job.record.queued(position))


def preview_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    # This runs on the device thread at every step: the fastest zlib level costs a third of
    # the default's time for a few percent more bytes.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def registry_of(services: Services) -> JobRegistry:
    registry = services.extras.get(REGISTRY_KEY)
    if not isinstance(registry, JobRegistry):
        registry = JobRegistry(services)
        services.extras[REGISTRY_KEY] = registry
    return registry


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


def parse_job(services: Services, body: JobRequest) -> GenerationInput:
    spec = find_model(services.engine.specs, body.model, services.default_model)
    return parse_native(spec, body, body.strength)


async def create_job(request: Request) -> JSONResponse:
    services = services_of(request)
    registry = registry_of(services)
    body = await read_model(request, JobRequest, services.settings.max_body_bytes)
    key_hash = idempotency_key_hash(request)
    digest = body_hash(body)
    if key_hash is not None and (earlier := registry.replay(key_hash, digest)) is not None:
        log_fields(request, job_id_hash=job_id_hash(earlier.record.id))
        return accepted(earlier, replayed=True)
    gen = parse_job(services, body)
    log_fields(request, model=gen.model, n=gen.n, width=gen.width, height=gen.height,
               steps=gen.steps, guidance=gen.guidance, seed=gen.seed,
               output_format=gen.output_format)
    ttl = await admit(services, gen)
    inputs = await native_inputs(body, (gen.width, gen.height), services.settings.max_body_bytes)
    assert ttl is not None  # jobs always store their images
    # Checked again after the await: a twin request may have created the job meanwhile.
    if key_hash is not None and (earlier := registry.replay(key_hash, digest)) is not None:
        return accepted(earlier, replayed=True)
    key = None if key_hash is None else (key_hash, digest)
    job = registry.start(gen, inputs, ttl, public_base_url(request), request_id_of(request),
                         bool(body.previews), key)
    log_fields(request, job_id_hash=job_id_hash(job.record.id), ttl_seconds=ttl)
    return accepted(job, replayed=False)


def _job_of(request: Request) -> tuple[JobRegistry, Job]:
    registry = registry_of(services_of(request))
    job = registry.get(request.path_params["job_id"])
    if job is None:
        raise NOT_FOUND
    log_fields(request, job_id_hash=job_id_hash(job.record.id))
    return registry, job


async def get_job(request: Request) -> JSONResponse:
    _, job = _job_of(request)
    return JSONResponse(job.record.view())


async def cancel_job(request: Request) -> JSONResponse:
    registry, job = _job_of(request)
    if not registry.cancel(job):
        raise ApiError(409, "The job has already ended; there is nothing to cancel.",
                       code="job_ended")
    # A queued job is canceled now (200); a running one stops at its next step (202).
    status = 200 if job.record.status.ended else 202
    return JSONResponse(job.record.view(), status_code=status)


def format_event(event: JobEvent) -> str:
    return f"id: {event.seq}\nevent: {event.name}\ndata: {json.dumps(event.data)}\n\n"


def last_event_id(request: Request) -> int:
    value = request.headers.get("last-event-id", "")
    # isdigit() alone passes "²" and other digits int() refuses; an id has at most 19 digits.
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else 0


async def event_stream(registry: JobRegistry, job: Job, after_seq: int) -> AsyncIterator[str]:
    # Subscribing happens when the stream starts, so an unstarted stream holds nothing, and the
    # finally runs on every way out: the end event, a disconnect (cancellation), shutdown.
    subscriber = registry.subscribe(job, after_seq)
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
        registry.unsubscribe(job, subscriber)


async def job_events(request: Request) -> Response:
    registry, job = _job_of(request)
    after_seq = last_event_id(request)
    if job.record.status.ended and all(e.seq <= after_seq for e in job.record.history):
        # The client has seen the end; 204 tells an EventSource to stop reconnecting.
        return Response(status_code=204)
    return StreamingResponse(
        event_stream(registry, job, after_seq),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
]
