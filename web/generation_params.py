"""A validated request body, checked against its model's own limits, as one GenerationInput.

The body's types and the API's bounds are checked by web.request_models; what
depends on the chosen model (its sizes, max_n, max steps) is checked here.
Every error names its field.
"""

from __future__ import annotations

import secrets
from typing import Any

from imagegen.adapters import AdapterChoice
from imagegen.registry import ModelSpec
from service.generation import GenerationInput
from service.tenancy.principal import ANONYMOUS_ID
from web.errors import ApiError, bad_request
from web.request_models import (
    MAX_SEED,
    GenerationFields,
    ImageGenerationRequest,
    NativeFields,
)

DEFAULT_STRENGTH = 0.8


def check_limit(value: int, limit: int, name: str, what: str) -> None:
    if value > limit:
        raise bad_request(f"'{name}' must be at most {limit} ({what}).", name)


def check_size(spec: ModelSpec, width: int, height: int, param: str) -> None:
    if not spec.allows_size(width, height):
        allowed = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
        raise bad_request(f"'{param}' must be one of the model's sizes: {allowed}.", param)


def _common(spec: ModelSpec, body: GenerationFields, n_field: str, n: int | None,
            strength: float | None) -> dict[str, Any]:
    """The fields both API forms share, checked against the model's own limits."""
    n = 1 if n is None else n
    check_limit(n, spec.max_n, n_field, f"the max_n of model {spec.name}")
    steps = spec.default_steps if body.num_inference_steps is None else body.num_inference_steps
    check_limit(steps, spec.max_steps, "num_inference_steps",
                f"the max_inference_steps of model {spec.name}")
    return {
        "model": spec.name,
        "prompt": body.prompt,
        "negative_prompt": body.negative_prompt,
        "n": n,
        "steps": steps,
        "guidance": spec.default_guidance if body.guidance_scale is None
        else body.guidance_scale,
        "seed": secrets.randbelow(MAX_SEED + 1) if body.seed is None else body.seed,
        "ttl_seconds": body.ttl_seconds,
        "output_format": body.output_format or "png",
        "output_compression": body.output_compression,
        "strength": DEFAULT_STRENGTH if strength is None else strength,
        "loras": tuple(AdapterChoice(lora.name, lora.scale) for lora in body.loras or ()),
    }


def parse_openai(spec: ModelSpec, body: ImageGenerationRequest, strength: float | None = None,
                 owner: str = ANONYMOUS_ID) -> GenerationInput:
    if body.size is None:
        width, height = spec.default_size
    else:
        width, height = (int(side) for side in body.size.split("x"))
        check_size(spec, width, height, "size")
    return GenerationInput(width=width, height=height,
                           response_format=body.response_format or "url", owner=owner,
                           **_common(spec, body, "n", body.n, strength))


def parse_native(spec: ModelSpec, body: NativeFields, strength: float | None = None,
                 owner: str = ANONYMOUS_ID) -> GenerationInput:
    default_width, default_height = spec.default_size
    width = default_width if body.width is None else body.width
    height = default_height if body.height is None else body.height
    check_size(spec, width, height, "width")
    return GenerationInput(width=width, height=height, response_format=body.output or "url",
                           owner=owner,
                           **_common(spec, body, "num_images", body.num_images, strength))


def find_model(specs: dict[str, ModelSpec], name: str | None, default: str) -> ModelSpec:
    if name is None:
        name = default
    spec = specs.get(name)
    if spec is None:
        raise ApiError(404, "The model does not exist; GET /v1/models lists them.",
                       param="model", code="model_not_found")
    return spec
