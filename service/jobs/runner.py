"""Async jobs: one generation whose caller does not wait on the connection.

The runner (one per service) keeps each job's record in memory until its
images expire. The queue pushes each job's position and start to it, the
worker its step progress; both arrive on the worker thread and are handed
to the event loop. A job runs the one generation path (service.generation).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image

from imagegen.batcher import Ticket
from imagegen.types import Progress, QueueEvent, Started
from service.errors import (
    IdempotencyConflict,
    JobCanceled,
    JobEnded,
    JobNotFound,
    TooManyJobs,
    failure_of,
)
from service.generation import (
    GenerationInput,
    QueueWatch,
    deliver,
    submit,
    to_request,
    wait_for_result,
)
from service.jobs.state import TERMINAL_EVENTS, JobEvent, JobRecord
from service.tenancy import ANONYMOUS, ANONYMOUS_ID, Principal, Slot
from service.webhooks import Subscription

if TYPE_CHECKING:
    from service.container import Services

log = logging.getLogger("imagegen.jobs")

INTERNAL = ("internal_error", "The job failed.")
# At shutdown, after the device has drained: time for the last results to be stored.
STOP_GRACE_SECONDS = 5.0


class Subscriber:
    """One listener's pending events; consecutive progress events collapse into the last.

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
    webhook: Subscription | None = None
    # Whose job it is: another principal gets JobNotFound, as for a job that does not exist.
    owner: Principal = ANONYMOUS
    # The owner's concurrent slot, held from admission until the device is done.
    slot: Slot | None = None

    def view(self) -> dict[str, Any]:
        """The job as GET /v1/jobs/{id} shows it: its record, and its webhook's attempts."""
        view = self.record.view()
        if self.webhook is not None:
            view["webhook"] = self.webhook.view()
        return view


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """sha256 hex of a client's Idempotency-Key, and of the body it came with; a key is its
    owner's (another principal's same key is another key)."""

    key_hash: str
    body_hash: str
    owner: str = ANONYMOUS_ID


class JobRunner:
    """Every job of one service; used from the event loop only."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.jobs: dict[str, Job] = {}
        # (owner, key hash) -> (job id, body hash)
        self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def find(self, job_id: str, owner: str = ANONYMOUS_ID) -> Job:
        """The owner's job, or JobNotFound when unknown, another's, or expired (checked on
        every read)."""
        now = self.services.clock()
        job = self.jobs.get(job_id)
        if job is not None and job.owner.id != owner:
            job = None
        if job is not None and job.record.expired(now):
            self.purge(now)
            job = None
        if job is None:
            raise JobNotFound()
        return job

    async def refresh(self, job: Job) -> None:
        """Stop showing images deleted before their time (a DELETE of the URL, say)."""
        gone = set()
        for url in job.record.image_urls():
            token = urlsplit(url).path.rsplit("/", 1)[-1].split(".", 1)[0]
            if await self.services.store.head(token) is None:
                gone.add(url)
        job.record.images_gone(gone)

    def replay(self, key: IdempotencyKey) -> Job | None:
        """The job an earlier request with this key made; IdempotencyConflict on another body."""
        known = self.idempotency.get((key.owner, key.key_hash))
        if known is None:
            return None
        try:
            job = self.find(known[0], key.owner)
        except JobNotFound:
            return None
        if known[1] != key.body_hash:
            raise IdempotencyConflict()
        return job

    def start(self, gen: GenerationInput, ttl: float, base_url: str, request_id: str, *,
              init_image: Image.Image | None = None, mask_image: Image.Image | None = None,
              previews: bool = False, key: IdempotencyKey | None = None,
              webhook: Subscription | None = None, owner: Principal = ANONYMOUS,
              slot: Slot | None = None) -> Job:
        """Queue the generation as a new job of `owner`, holding its concurrent `slot` until
        the device is done (QueueFull leaves nothing behind; the caller keeps the slot)."""
        now = self.services.clock()
        self.purge(now)
        if len(self.jobs) >= self.services.settings.max_job_records:
            # Canceled and failed records count too until they expire: memory stays bounded.
            expiries = [job.record.expires_at for job in self.jobs.values()
                        if job.record.expires_at is not None]
            raise TooManyJobs(min(expiries) - now if expiries else None)
        record = JobRecord(id="job_" + secrets.token_urlsafe(24), model=gen.model,
                           created_at=now, ttl_seconds=ttl)
        job = Job(record, webhook=webhook, owner=owner)
        request = to_request(gen, request_id, init_image, mask_image, want_previews=previews)
        loop = asyncio.get_running_loop()
        job.ticket = submit(self.services, request, on_progress=self._progress_hook(job, loop),
                            on_queue=QueueWatch(forward=lambda event: self._queued(job, event)))
        job.slot = slot
        self.jobs[record.id] = job
        if key is not None:
            self.idempotency[(key.owner, key.key_hash)] = (record.id, key.body_hash)
        # Where it stands now; later changes are pushed by the queue.
        position = job.ticket.position
        self.publish(job, record.queued(position) if position is not None else record.started())
        # The job's own copy of the input keeps no prompt; only the worker's request does
        # (with any init image and mask), and the job lets go of it when it ends.
        kept = dataclasses.replace(gen, prompt="", negative_prompt=None)
        self._spawn(self._run(job, kept, ttl, base_url))
        return job

    def cancel(self, job: Job) -> None:
        """Cancel a queued or running job; JobEnded when it has already ended."""
        ticket = job.ticket
        if ticket is None or ticket.future.done():
            raise JobEnded()
        job.record.cancel_requested = True
        self.services.engine.cancel(ticket)
        if ticket.future.done():  # it was still queued: it never runs
            self._end(job, job.record.canceled(self.services.clock()))

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
            if job.webhook is not None and (notice := webhook_notice(job.record, event)):
                self.services.webhooks.notify(job.webhook, *notice)

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

    def shorten(self, ttl_for_model: Callable[[str], float], now: float) -> None:
        """An operator shortened live lifetimes: each record goes with its model's new limit."""
        for job in self.jobs.values():
            job.record.shorten(now + ttl_for_model(job.record.model))
        self.purge(now)

    async def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """After the engine has drained: let the last results be stored, then stop."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_seconds)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _queued(self, job: Job, event: QueueEvent) -> None:
        if job.ticket is None:
            return  # ended meanwhile
        if isinstance(event, Started):
            self.publish(job, job.record.started())
        else:
            self.publish(job, job.record.queued(event.position))

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
            try:
                result = await wait_for_result(services, job.ticket)
            finally:
                if job.slot is not None:
                    await job.slot.release()
            generated = await deliver(services, gen, result, ttl, base_url, 0.0, job.owner)
        except JobCanceled:
            self._end(job, job.record.canceled(services.clock()))
        except Exception as exc:
            failure = failure_of(exc)
            log.warning("job failed", extra={"error_type": type(exc).__name__})
            code, message = INTERNAL if failure is None else (failure.code, failure.message)
            self._end(job, job.record.failed(code, message, services.clock()))
        else:
            self._end(job, job.record.succeeded(generated, services.clock()))

    def _end(self, job: Job, events: list[JobEvent]) -> None:
        job.ticket = None
        self.publish(job, events)


def webhook_notice(record: JobRecord, event: JobEvent) -> tuple[str, dict[str, Any]] | None:
    """The webhook event a job event makes, with its thin data: never a prompt or an input."""
    data: dict[str, Any] = {"id": record.id, "status": record.status.value}
    if event.name == "started":
        return "started", data
    if event.name == "progress":
        return "progress", {**data, "progress": {"step": record.step, "total": record.total}}
    if event.name in TERMINAL_EVENTS:
        # succeeded: images (URL, expires_at), seed, usage; failed: the error's code and message.
        return "completed", {**data, **(record.result or {}), "error": record.error,
                             "expires_at": record.expires_at}
    return None


def preview_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    # This runs on the device thread at every step: the fastest zlib level costs a third of
    # the default's time for a few percent more bytes.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
