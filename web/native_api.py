"""The native form: POST /v1/inference/{model}."""

from __future__ import annotations

import base64
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.generation import generate
from web.auth import principal_of
from web.body import read_model
from web.generation_params import find_model, parse_native
from web.image_inputs import native_inputs
from web.openai_api import log_generation
from web.request_log import request_id_of
from web.request_models import InferenceRequest
from web.routing import public_base_url, services_of


async def infer(request: Request) -> JSONResponse:
    services = services_of(request)
    started = time.perf_counter()
    spec = find_model(services.engine.specs, request.path_params["model"], "")
    body = await read_model(request, InferenceRequest, services.settings.max_body_bytes)
    gen = parse_native(spec, body, body.strength, owner=principal_of(request).id)
    inputs = await native_inputs(body, (gen.width, gen.height), services.settings.max_body_bytes)
    log_generation(request, gen, None)
    generated = await generate(services, gen, request_id_of(request), public_base_url(request),
                               inputs.init_image, inputs.mask_image,
                               principal=principal_of(request))
    log_generation(request, gen, generated)
    images = [
        image.url if image.data is None
        else f"data:{image.content_type};base64,{base64.b64encode(image.data).decode()}"
        for image in generated.images
    ]
    runtime_ms = round((time.perf_counter() - started) * 1000)
    return JSONResponse({
        "images": images,
        "seed": generated.seed,
        "request_id": generated.request_id,
        "expires_at": generated.expires_at,
        "ignored_words": generated.ignored_words,
        "inference_status": {"status": "succeeded", "runtime_ms": runtime_ms,
                             "cost": generated.usage.cost},
    })


routes = [Route("/v1/inference/{model}", infer, methods=["POST"])]
