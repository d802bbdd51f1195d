"""The path of one generation, shared by every API surface.

Validate against the model -> queue on the device -> encode off the loop ->
store (or inline) -> what the response needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from imagegen.batcher import Lane, Ticket
from imagegen.encode import CONTENT_TYPES
from imagegen.pipelines.base import PromptError
from imagegen.types import GenerationRequest, GenerationResult, Progress, SamplingParams
from imagegen.worker import DeadlineExceeded
from store.retention import TTLRejected
from web.errors import bad_request
from web.generation_params import GenerationInput
from web.services import Services

# A worker stops a request at its deadline between steps; this covers one slow step more
# (capped at the timeout itself, so a hung pipeline frees its caller within 2x the timeout).
DEADLINE_GRACE_SECONDS = 10.0


@dataclass(slots=True)
class OutputImage:
    data: bytes | None  # inline responses only; stored images are not kept here
    content_type: str
    url: str | None = None
    expires_at: float | None = None


@dataclass(slots=True)
class Generated:
    request_id: str
    images: list[OutputImage]
    seed: int
    device_seconds: float
    queue_seconds: float
    batch_size: int
    ignored_words: int
    created: int


def image_url(base_url: str, token: str, output_format: str) -> str:
    return f"{base_url.rstrip('/')}/i/{token}.{output_format}"


async def resolve_ttl(services: Services, gen: GenerationInput) -> float | None:
    """The TTL the images will get; None when nothing is stored."""
    if gen.response_format != "url":
        return None
    policy = await services.retention.get()
    try:
        return policy.ttl_for(gen.model, gen.ttl_seconds)
    except TTLRejected as exc:
        raise bad_request(str(exc), "ttl_seconds") from None


def check_prompt(services: Services, gen: GenerationInput) -> int:
    try:
        return services.engine.pipelines[gen.model].check_prompt(gen.prompt)
    except PromptError as exc:
        # The message lists the model's vocabulary; it never quotes the prompt.
        raise bad_request(str(exc), "prompt") from None


def to_request(
    gen: GenerationInput,
    request_id: str,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
    want_previews: bool = False,
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
    )


def submit(
    services: Services,
    request: GenerationRequest,
    lane: Lane = Lane.INTERACTIVE,
    on_progress: Callable[[Progress], None] | None = None,
) -> Ticket:
    """Queue on the device; raises QueueFull (-> 429)."""
    return services.engine.submit(request, lane, on_progress, services.settings.request_timeout)


async def wait_for_result(services: Services, ticket: Ticket) -> GenerationResult:
    deadline = services.settings.request_timeout
    timeout = deadline + min(DEADLINE_GRACE_SECONDS, deadline)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(ticket.future), timeout)
    except TimeoutError:
        # The pipeline is stuck inside one step: give up on it, free the caller.
        services.engine.cancel(ticket)
        raise DeadlineExceeded() from None


async def store_images(
    services: Services, result: GenerationResult, gen: GenerationInput,
    ttl: float | None, base_url: str,
) -> list[OutputImage]:
    encoded = await services.encoder.encode(result.images, gen.output_format)
    content_type = CONTENT_TYPES[gen.output_format]
    if ttl is None:
        return [OutputImage(data=data, content_type=content_type) for data in encoded]
    outputs = []
    for data in encoded:
        token, artifact = await services.store.put(data, content_type, ttl)
        outputs.append(OutputImage(data=None, content_type=content_type,
                                   url=image_url(base_url, token, gen.output_format),
                                   expires_at=artifact.expires_at))
    return outputs


async def generate(
    services: Services,
    gen: GenerationInput,
    request_id: str,
    base_url: str,
    init_image: Image.Image | None = None,
    mask_image: Image.Image | None = None,
) -> Generated:
    """Run one synchronous generation end to end."""
    check_prompt(services, gen)
    ttl = await resolve_ttl(services, gen)
    queued_at = time.monotonic()
    ticket = submit(services, to_request(gen, request_id, init_image, mask_image))
    result = await wait_for_result(services, ticket)
    queue_seconds = max(0.0, time.monotonic() - queued_at - result.device_seconds)
    images = await store_images(services, result, gen, ttl, base_url)
    services.metrics.images_generated(gen.model, len(images))
    return Generated(
        request_id=request_id,
        images=images,
        seed=result.seed,
        device_seconds=result.device_seconds,
        queue_seconds=queue_seconds,
        batch_size=result.batch_size,
        ignored_words=result.ignored_words,
        created=int(time.time()),
    )
