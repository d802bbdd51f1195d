"""OpenAI's image streaming wire format: `stream: true` answers Server-Sent Events.

Each event's `data:` is JSON with a `type` (also the SSE `event:` name):
`image_generation.partial_image` (`image_edit.partial_image` for edits) for each
partial image, then `image_generation.completed` with the final image and usage;
with n > 1 each image has its own events. A failure after the stream began is an
`error` event carrying the usual error object, which the `openai` client raises.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image
from starlette.responses import StreamingResponse

from imagegen.types import Progress
from service.container import Services
from service.generation import GenerationInput, Pending, Usage, finish, start
from service.tenancy import Principal
from web.errors import ApiError, api_error_for, bad_request

log = logging.getLogger("imagegen.stream")

# OpenAI's fields that describe options this service does not have: its images are opaque,
# and quality is whatever the model's steps give.
BACKGROUND = "opaque"
QUALITY = "auto"
INTERNAL_ERROR = ApiError(500, "The generation failed.", code="internal_error",
                          error_type="server_error")


def requested_partials(stream: bool | None, partial_images: int | None) -> int | None:
    """How many partial images a streaming request wants; None when it does not stream."""
    if stream:
        return partial_images or 0
    if partial_images:
        raise bad_request("'partial_images' needs 'stream': true.", "partial_images")
    return None


def partial_image_steps(total_steps: int, count: int) -> frozenset[int]:
    """Steps (0-based) evenly spaced through sampling, the last one excluded (it is the final).

    Fewer than `count` when there are too few steps, as OpenAI may send fewer.
    """
    steps = {(index + 1) * total_steps // (count + 1) - 1 for index in range(count)}
    return frozenset(step for step in steps if 0 <= step < total_steps - 1)


def event_types(kind: str) -> tuple[str, str]:
    """(partial, completed) event types of "image_generation" or "image_edit"."""
    return f"{kind}.partial_image", f"{kind}.completed"


def image_event(event_type: str, data: bytes, *, size: str, output_format: str,
                created_at: int, partial_image_index: int | None = None,
                usage: dict[str, Any] | None = None) -> str:
    event: dict[str, Any] = {
        "type": event_type,
        "b64_json": base64.b64encode(data).decode(),
        "created_at": created_at,
        "size": size,
        "quality": QUALITY,
        "background": BACKGROUND,
        "output_format": output_format,
    }
    if partial_image_index is not None:
        event["partial_image_index"] = partial_image_index
    if usage is not None:
        event["usage"] = usage
    return sse(event_type, event)


def openai_usage(usage: Usage) -> dict[str, Any]:
    """The completed event's usage: the service's device seconds and cost.

    The service meters device time, not tokens: OpenAI's token counts are there, as
    zeros, only so that clients that validate the event against OpenAI's shape accept it.
    """
    return {**usage.to_dict(), "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}


def error_event(error: ApiError) -> str:
    return sse("error", {"type": "error", "error": {
        "message": error.message, "type": error.error_type, "param": error.param,
        "code": error.code}})


def sse(event_type: str, data: dict[str, Any]) -> str:
    return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream_images(services: Services, gen: GenerationInput, partial_images: int,
                        kind: str, request_id: str, init_image: Image.Image | None = None,
                        mask_image: Image.Image | None = None, *,
                        principal: Principal) -> StreamingResponse:
    """Start the generation now, so a refusal is an ordinary error response; stream the rest.

    The images travel in the events: a stream stores nothing.
    """
    gen = dataclasses.replace(gen, response_format="b64_json")
    loop = asyncio.get_running_loop()
    partials: asyncio.Queue[list[Image.Image]] = asyncio.Queue()

    def on_progress(progress: Progress) -> None:
        # Runs on the worker thread, inside a batch shared with other requests: never raise.
        if progress.partial_images:
            try:
                loop.call_soon_threadsafe(partials.put_nowait, progress.partial_images)
            except RuntimeError:  # the loop has closed (shutdown): nobody is listening
                log.debug("partial image dropped")

    pending = await start(services, gen, request_id, init_image, mask_image, on_progress,
                          partial_image_steps(gen.steps, partial_images), principal=principal)
    return StreamingResponse(
        _events(services, pending, kind, partials),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(services: Services, pending: Pending, kind: str,
                  partials: asyncio.Queue[list[Image.Image]]) -> AsyncIterator[str]:
    gen = pending.gen
    partial_type, completed_type = event_types(kind)
    size = f"{gen.width}x{gen.height}"
    finished = asyncio.ensure_future(finish(services, pending, ""))
    try:
        index = 0
        # Partial images handed over before the result are all sent before it.
        while not (finished.done() and partials.empty()):
            next_partial = asyncio.ensure_future(partials.get())
            await asyncio.wait({finished, next_partial}, return_when=asyncio.FIRST_COMPLETED)
            if not next_partial.done():
                next_partial.cancel()
                continue
            encoded = await services.encoder.encode(next_partial.result(), gen.output_format,
                                                    gen.output_compression)
            for data in encoded:
                yield image_event(partial_type, data, size=size, created_at=int(time.time()),
                                  output_format=gen.output_format, partial_image_index=index)
            index += 1
        generated = finished.result()
        usage = openai_usage(generated.usage)
        for image in generated.images:
            assert image.data is not None
            yield image_event(completed_type, image.data, size=size, created_at=generated.created,
                              output_format=gen.output_format, usage=usage)
    except Exception as exc:
        log.warning("stream failed", extra={"error_type": type(exc).__name__})
        yield error_event(api_error_for(exc) or INTERNAL_ERROR)
    finally:
        # The client went away (or the stream failed): the work stops at its next step.
        # (Canceled on the engine first: dropping the waiter also settles the ticket's future.)
        if not pending.ticket.future.done():
            services.engine.cancel(pending.ticket)
        finished.cancel()
        await pending.slot.release()  # also when `finished` was canceled before it ran
