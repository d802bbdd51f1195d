"""The OpenAI-compatible surface: POST /v1/images/generations and GET /v1/models."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagegen.engine import Engine
from imagegen.registry import ModelSpec
from service.generation import Generated, GenerationInput, generate, input_log_fields
from web.auth import principal_of
from web.body import read_model
from web.generation_params import find_model, parse_openai
from web.openai_stream import requested_partials, stream_images
from web.request_log import log_fields, request_id_of
from web.request_models import ImageGenerationRequest
from web.routing import public_base_url, services_of

DEFAULT_MODEL_CREATED = 1_700_000_000


def log_generation(request: Request, gen: GenerationInput, generated: Generated | None) -> None:
    log_fields(request, **input_log_fields(gen))
    if generated is not None:
        log_fields(request, **generated.log_fields())


async def create_image(request: Request) -> Response:
    services = services_of(request)
    body = await read_model(request, ImageGenerationRequest, services.settings.max_body_bytes)
    spec = find_model(services.engine.specs, body.model, services.default_model)
    gen = parse_openai(spec, body, owner=principal_of(request).id)
    log_generation(request, gen, None)
    partials = requested_partials(body.stream, body.partial_images)
    if partials is not None:
        return await stream_images(services, gen, partials, "image_generation",
                                   request_id_of(request), principal=principal_of(request))
    generated = await generate(services, gen, request_id_of(request), public_base_url(request),
                               principal=principal_of(request))
    log_generation(request, gen, generated)
    return JSONResponse(images_response(generated))


def images_response(generated: Generated) -> dict[str, object]:
    """OpenAI's images response (generations and edits alike)."""
    data = [
        {"b64_json": base64.b64encode(image.data).decode()} if image.data is not None
        else {"url": image.url, "expires_at": image.expires_at}
        for image in generated.images
    ]
    return {
        "created": generated.created,
        "data": data,
        "request_id": generated.request_id,
        "seed": generated.seed,
        "ignored_words": generated.ignored_words,
        "usage": generated.usage.to_dict(),
    }


def describe_model(engine: Engine, spec: ModelSpec, owner: str) -> dict[str, object]:
    traits = spec.traits
    return {
        "id": spec.name,
        "object": "model",
        "created": DEFAULT_MODEL_CREATED,
        "owned_by": "imagegen",
        "description": spec.description,
        "family": spec.family,
        "sizes": [f"{w}x{h}" for w, h in spec.sizes],
        "default_size": f"{spec.default_size[0]}x{spec.default_size[1]}",
        "defaults": {"num_inference_steps": spec.default_steps,
                     "guidance_scale": spec.default_guidance},
        "limits": {"max_n": spec.max_n, "max_inference_steps": spec.max_steps},
        "capabilities": {"image_to_image": traits.image_to_image,
                         "inpainting": traits.inpainting,
                         "negative_prompt": traits.negative_prompt,
                         "loras": traits.adapters},
        # The operator's adapters, then the caller's own uploads (by id, with their expiry).
        "loras": [{"name": name, "source": "operator"}
                  for name in engine.adapters.registered(spec.name)]
        + [{"name": upload.name, "source": "upload", "expires_at": upload.expires_at}
           for upload in engine.adapters.uploads_of(owner, spec.name)],
        "examples": list(spec.examples),
        "vocabulary": getattr(engine.pipelines[spec.name], "vocabulary", None),
        "state": engine.model_state(spec.name),  # resident | offloaded | loading
    }


async def list_models(request: Request) -> JSONResponse:
    engine = services_of(request).engine
    owner = principal_of(request).id
    data = [describe_model(engine, spec, owner) for spec in engine.specs.values()]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> JSONResponse:
    engine = services_of(request).engine
    spec = find_model(engine.specs, request.path_params["model"], "")
    return JSONResponse(describe_model(engine, spec, principal_of(request).id))


routes = [
    Route("/v1/images/generations", create_image, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model}", get_model, methods=["GET"]),
]
