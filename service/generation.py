"""The one path of a generation, which every surface takes (sync, edits, jobs, batches).

policy (the prompt, the TTL of the model's retention policy) -> submit to the
device queue -> wait -> encode off the loop -> store, all or nothing -> usage.
`generate` runs it end to end; jobs and batches run the same steps with their
own ticket (to follow it, cancel it or queue it in the bulk lane).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image

from imagegen.adapters import AdapterChoice
from imagegen.batcher import Lane, Ticket
from imagegen.encode import CONTENT_TYPES
from imagegen.pipelines.base import PromptError
from imagegen.types import (
    GenerationRequest,
    GenerationResult,
    Progress,
    QueueEvent,
    SamplingParams,
    Started,
)
from service.errors import DeadlineExceeded, InvalidInput
from service.tenancy import ANONYMOUS_ID, Principal, Slot, Usage
from store import StoreUnavailable
from store.retention import TTLRejected

if TYPE_CHECKING:
    from service.container import Services

log = logging.getLogger("imagegen.generation")

# A worker stops a request at its deadline between steps; this covers one slow step more
# (capped at the timeout itself, so a hung pipeline frees its caller within 2x the timeout).
DEADLINE_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class GenerationInput:
    """A generation request that passed validation (content still in memory only)."""

    model: str
    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    ttl_seconds: int | None
    output_format: str
    response_format: str  # "url" | "b64_json" | "data_url"
    strength: float = 0.8
    output_compression: int | None = None  # webp/jpeg quality; the encoder's default if None
    loras: tuple[AdapterChoice, ...] = ()
    owner: str = ANONYMOUS_ID  # the principal: uploaded adapters are reachable to it only

    @property
    def stores_images(self) -> bool:
        return self.response_format == "url"


@dataclass(slots=True)
class OutputImage:
    data: bytes | None  # inline responses only; stored images are not kept here
    content_type: str
    url: str | None = None
    expires_at: float | None = None


def earliest_expiry(expiries: Iterable[float | None]) -> float | None:
    """The one `expires_at` of a set of images (native, jobs, batches): when the first goes."""
    return min((expiry for expiry in expiries if expiry is not None), default=None)


@dataclass(slots=True)
class Generated:
    request_id: str
    images: list[OutputImage]
    seed: int
    usage: Usage
    queue_seconds: float
    micro_batch_size: int  # images in the device call this request shared
    ignored_words: int
    created: int

    @property
    def expires_at(self) -> float | None:
        return earliest_expiry(image.expires_at for image in self.images)

    def log_fields(self) -> dict[str, Any]:
        """What the request log carries about the outcome (metadata only)."""
        return {"device_seconds": self.usage.device_seconds, "cost": self.usage.cost,
                "queue_seconds": round(self.queue_seconds, 4),
                "batch_size": self.micro_batch_size, "ignored_words": self.ignored_words}


def input_log_fields(gen: GenerationInput) -> dict[str, Any]:
    """What the request log carries about a generation request (never its prompt)."""
    return {"model": gen.model, "n": gen.n, "width": gen.width, "height": gen.height,
            "steps": gen.steps, "guidance": gen.guidance, "seed": gen.seed,
            "response_format": gen.response_format, "output_format": gen.output_format}


def new_request_id() -> str:
    # Unique, not secret (an id grants nothing): the random module's generator
    # costs half of os.urandom's syscall, paid by every image fetch. It is
    # reseeded in forked children, so workers never repeat each other's ids.
    return f"req_{random.getrandbits(96):024x}"


def image_url(base_url: str, token: str, output_format: str) -> str:
    return f"{base_url.rstrip('/')}/i/{token}.{output_format}"


def check_prompt(services: Services, gen: GenerationInput) -> int:
    """The prompt's words against the model's vocabulary; the number it ignores."""
    try:
        return services.engine.pipelines[gen.model].check_prompt(gen.prompt)
    except PromptError as exc:
        # The message lists the model's vocabulary; it never quotes the prompt.
        raise InvalidInput(str(exc), "prompt") from None


async def resolve_ttl(services: Services, model: str, requested: float | None,
                      param: str = "ttl_seconds") -> float:
    """The TTL the model's retention policy gives a new image (a request may only shorten it)."""
    policy = await services.retention.get()
    try:
        return policy.ttl_for(model, requested)
    except TTLRejected as exc:
        raise InvalidInput(str(exc), param) from None


async def admit(services: Services, gen: GenerationInput, principal: Principal) -> float | None:
    """Policy before anything is queued: the caller's scope and daily quota, the prompt, and
    the images' TTL (None: not stored)."""
    await services.tenancy.admit(principal, gen.model)
    check_prompt(services, gen)
    if not gen.stores_images:
        return None
    return await resolve_ttl(services, gen.model, gen.ttl_seconds)


def to_request(
    gen: GenerationInput,
    request_id: str,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
    want_previews: bool = False,
    partial_image_steps: frozenset[int] = frozenset(),
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        params=SamplingParams(gen.model, gen.width, gen.height, gen.steps, gen.guidance),
        prompt=gen.prompt,
        negative_prompt=gen.negative_prompt,
        num_images=gen.n,
        seed=gen.seed,
        init_image=init_image,
        mask_image=mask_image,
        strength=gen.strength,
        want_previews=want_previews,
        partial_image_steps=partial_image_steps,
        loras=gen.loras,
        owner=gen.owner,
    )


def submit(
    services: Services,
    request: GenerationRequest,
    lane: Lane = Lane.INTERACTIVE,
    on_progress: Callable[[Progress], None] | None = None,
    on_queue: Callable[[QueueEvent], None] | None = None,
) -> Ticket:
    """Queue on the device; raises QueueFull.

    An interactive request has the request timeout from now, queueing included;
    a bulk one the same time on the device, each time it starts.
    """
    return services.engine.submit(request, lane, on_progress, services.settings.request_timeout,
                                  on_queue=on_queue)


def give_up_after(services: Services) -> float:
    timeout = services.settings.request_timeout
    return timeout + min(DEADLINE_GRACE_SECONDS, timeout)


async def wait_for_result(services: Services, ticket: Ticket) -> GenerationResult:
    """The result of an interactive ticket; gives up on a pipeline stuck inside one step."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(ticket.future), give_up_after(services))
    except TimeoutError:
        # The pipeline is stuck inside one step: give up on it, free the caller.
        services.engine.cancel(ticket)
        raise DeadlineExceeded() from None


class QueueWatch:
    """A ticket's queue events as the event loop sees them (the queue pushes them from any thread).

    Pass it as a ticket's on_queue; `forward` hears each event on the loop, in order.
    """

    def __init__(self, forward: Callable[[QueueEvent], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._forward = forward
        self.started_at: float | None = None  # time.monotonic() of the latest start
        self.changed = asyncio.Event()

    def __call__(self, event: QueueEvent) -> None:
        # Runs under the queue's lock, maybe on the worker thread: hand over, never raise.
        try:
            self._loop.call_soon_threadsafe(self._apply, event)
        except RuntimeError:  # the loop has closed (shutdown): nobody is listening
            log.debug("queue event dropped")

    def _apply(self, event: QueueEvent) -> None:
        self.started_at = time.monotonic() if isinstance(event, Started) else None
        self.changed.set()
        if self._forward is not None:
            self._forward(event)


async def wait_on_device(services: Services, ticket: Ticket, watch: QueueWatch) -> GenerationResult:
    """The result of a bulk ticket: no limit on its wait in the queue, and give_up_after on
    the device from each start (it may give way and start again)."""
    future = asyncio.wrap_future(ticket.future)
    try:
        while not future.done():
            watch.changed.clear()
            left = None
            if watch.started_at is not None:
                left = watch.started_at + give_up_after(services) - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded()  # stuck inside one step: give up on it
            changed = asyncio.ensure_future(watch.changed.wait())
            waiters: set[asyncio.Future[Any]] = {future, changed}
            try:
                await asyncio.wait(waiters, timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
    except BaseException:
        services.engine.cancel(ticket)
        # Its outcome (JobCanceled, as a rule) is nobody's now: seen here, or asyncio logs
        # "Future exception was never retrieved" with a traceback.
        future.add_done_callback(_outcome_seen)
        raise
    return future.result()


def _outcome_seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def store_images(services: Services, images: list[bytes], content_type: str,
                       ttl: float, model: str) -> list[tuple[str, float]]:
    """Store every image or none: (token, expires_at) each; a refusal removes what was put."""
    stored: list[tuple[str, float]] = []
    try:
        for data in images:
            token, artifact = await services.store.put(data, content_type, ttl, tag=model)
            stored.append((token, artifact.expires_at))
    except BaseException:
        # Nobody was given these URLs: they must not outlive the refused request.
        for token, _ in stored:
            await services.store.delete(token)
        raise
    return stored


async def deliver(
    services: Services,
    gen: GenerationInput,
    result: GenerationResult,
    ttl: float | None,
    base_url: str,
    queue_seconds: float,
    principal: Principal,
) -> Generated:
    """Encode off the loop, store (when ttl is set) all or nothing, count, say what it cost.

    The one place usage is counted: every surface that makes images ends here.
    """
    encoded = await services.encoder.encode(result.images, gen.output_format,
                                            gen.output_compression)
    content_type = CONTENT_TYPES[gen.output_format]
    if ttl is None:
        images = [OutputImage(data=data, content_type=content_type) for data in encoded]
    else:
        stored = await store_images(services, encoded, content_type, ttl, gen.model)
        images = [OutputImage(data=None, content_type=content_type,
                              url=image_url(base_url, token, gen.output_format),
                              expires_at=expires_at)
                  for token, expires_at in stored]
    services.metrics.images_generated(gen.model, len(images))
    usage = Usage.of(result.device_seconds, services.engine.specs[gen.model].price_per_second)
    try:
        await services.tenancy.record(principal, gen.model, len(images), usage)
    except StoreUnavailable:
        # The images are made and stored; losing their count must not lose them for the caller.
        log.warning("usage not recorded", extra={"error_type": "StoreUnavailable"})
    return Generated(
        request_id=result.request_id,
        images=images,
        seed=result.seed,
        usage=usage,
        queue_seconds=queue_seconds,
        micro_batch_size=result.micro_batch_size,
        ignored_words=result.ignored_words,
        created=int(time.time()),
    )


@dataclass(frozen=True, slots=True)
class Pending:
    """A generation admitted and queued: its ticket, and what finishing it needs."""

    gen: GenerationInput
    ticket: Ticket
    ttl: float | None
    queued_at: float  # time.monotonic() at submission
    principal: Principal
    # The caller's concurrent slot, held until the device is done with the request.
    slot: Slot


async def start(
    services: Services,
    gen: GenerationInput,
    request_id: str,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    partial_image_steps: frozenset[int] = frozenset(),
    *,
    principal: Principal,
) -> Pending:
    """Policy, one of the caller's concurrent slots, then the device queue: a refusal (bad
    input, scope, quota, a limit, QueueFull) comes before any wait."""
    ttl = await admit(services, gen, principal)
    request = to_request(gen, request_id, init_image, mask_image,
                         partial_image_steps=partial_image_steps)
    slot = await services.tenancy.take_slot(principal)
    queued_at = time.monotonic()
    try:
        ticket = submit(services, request, on_progress=on_progress)
    except BaseException:
        await slot.release()
        raise
    return Pending(gen, ticket, ttl, queued_at, principal, slot)


async def finish(services: Services, pending: Pending, base_url: str) -> Generated:
    """Wait for the device (then free the caller's slot), encode, store and account."""
    try:
        result = await wait_for_result(services, pending.ticket)
    finally:
        await pending.slot.release()
    queue_seconds = max(0.0, time.monotonic() - pending.queued_at - result.device_seconds)
    return await deliver(services, pending.gen, result, pending.ttl, base_url, queue_seconds,
                         pending.principal)


async def generate(
    services: Services,
    gen: GenerationInput,
    request_id: str,
    base_url: str,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
    *,
    principal: Principal,
) -> Generated:
    """Run one synchronous generation end to end (a stream takes the same two steps)."""
    return await finish(services, await start(services, gen, request_id, init_image,
                                              mask_image, principal=principal), base_url)
