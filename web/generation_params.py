"""Validating generation fields, OpenAI-style and native; every error names its field."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from imagegen.registry import ModelSpec
from web.errors import ApiError, bad_request

MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
OUTPUT_FORMATS = ("png", "webp", "jpeg")


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


def _missing(name: str) -> ApiError:
    return bad_request(f"'{name}' is required.", name)


def get_str(body: dict[str, Any], name: str, *, required: bool = False,
            max_chars: int = MAX_PROMPT_CHARS) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string.", name)
    if required and not value.strip():
        raise bad_request(f"'{name}' must not be empty.", name)
    if len(value) > max_chars:
        raise bad_request(f"'{name}' must be at most {max_chars} characters.", name)
    return value


def get_int(
    body: dict[str, Any], name: str, default: int | None, low: int, high: int
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    # JSON has one number type; 2.0 is fine, 2.5 and true are not.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise bad_request(f"'{name}' must be an integer.", name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low} and {high}.", name)
    return int(value)


def get_float(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number.", name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low} and {high}.", name)
    return float(value)


def get_choice(body: dict[str, Any], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if value not in choices:
        raise bad_request(f"'{name}' must be one of: {', '.join(choices)}.", name)
    return str(value)


def check_size(spec: ModelSpec, width: int, height: int, param: str) -> None:
    if not spec.allows_size(width, height):
        allowed = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
        raise bad_request(f"'{param}' must be one of the model's sizes: {allowed}.", param)


def parse_size(spec: ModelSpec, body: dict[str, Any]) -> tuple[int, int]:
    value = body.get("size")
    if value is None:
        return spec.default_size
    if not isinstance(value, str) or value.count("x") != 1:
        raise bad_request("'size' must look like '512x512'.", "size")
    width, height = value.split("x")
    if not (width.isdigit() and height.isdigit()):
        raise bad_request("'size' must look like '512x512'.", "size")
    check_size(spec, int(width), int(height), "size")
    return int(width), int(height)


def _common(spec: ModelSpec, body: dict[str, Any], n_field: str) -> dict[str, Any]:
    """The fields both API forms share, validated against the model's limits."""
    prompt = get_str(body, "prompt", required=True)
    assert prompt is not None
    n = get_int(body, n_field, 1, 1, spec.max_n)
    steps = get_int(body, "num_inference_steps", spec.default_steps, 1, spec.max_steps)
    seed = get_int(body, "seed", None, 0, MAX_SEED)
    ttl = get_int(body, "ttl_seconds", None, 1, 10**9)
    assert n is not None and steps is not None
    return {
        "model": spec.name,
        "prompt": prompt,
        "negative_prompt": get_str(body, "negative_prompt"),
        "n": n,
        "steps": steps,
        "guidance": get_float(body, "guidance_scale", spec.default_guidance, 0.0, 30.0),
        "seed": secrets.randbelow(MAX_SEED + 1) if seed is None else seed,
        "ttl_seconds": ttl,
        "strength": get_float(body, "strength", 0.8, 0.01, 1.0),
    }


def parse_openai(spec: ModelSpec, body: dict[str, Any]) -> GenerationInput:
    common = _common(spec, body, "n")
    width, height = parse_size(spec, body)
    return GenerationInput(
        width=width,
        height=height,
        output_format=get_choice(body, "output_format", "png", OUTPUT_FORMATS),
        response_format=get_choice(body, "response_format", "url", ("url", "b64_json")),
        **common,
    )


def parse_native(spec: ModelSpec, body: dict[str, Any]) -> GenerationInput:
    common = _common(spec, body, "num_images")
    default_width, default_height = spec.default_size
    width = get_int(body, "width", default_width, 1, 16384)
    height = get_int(body, "height", default_height, 1, 16384)
    assert width is not None and height is not None
    check_size(spec, width, height, "width")
    output = get_choice(body, "output", "url", ("url", "data_url"))
    return GenerationInput(
        width=width,
        height=height,
        output_format=get_choice(body, "output_format", "png", OUTPUT_FORMATS),
        response_format=output,
        **common,
    )


def find_model(specs: dict[str, ModelSpec], name: Any, default: str) -> ModelSpec:
    if name is None:
        name = default
    if not isinstance(name, str):
        raise bad_request("'model' must be a string.", "model")
    spec = specs.get(name)
    if spec is None:
        raise ApiError(404, "The model does not exist; GET /v1/models lists them.",
                       param="model", code="model_not_found")
    return spec
