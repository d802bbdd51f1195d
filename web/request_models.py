"""The request bodies as typed models: the one source of truth for what a client may send.

They validate every body (after web.strict_json has parsed it) and generate the
schemas of /openapi.json, so the document and the server cannot disagree.
Bounds here are the API's own; the limits of one model (its sizes, `max_n`,
`max_steps`) are checked against the chosen model in web.generation_params
and stated in the document by web.openapi from the models being served.

To add a field, declare it on the model that takes it (with a description);
the validation, the error naming it and the document follow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from imagegen.adapters import MAX_ADAPTERS_PER_REQUEST
from store.retention import MAX_LIFETIME_SECONDS
from web.errors import ApiError

MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1
MAX_N = 8  # the API's ceiling; each model's max_n is at most this
MAX_SIDE = 16384
MAX_CUSTOM_ID_CHARS = 64
# ASCII digits only (str.isdigit() would pass "²" and "١٢٨"), no leading zero.
SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 2.0 is the integer 2 (as JSON Schema says); 2.5 is not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WHOLE_NUMBER = BeforeValidator(_whole_number)
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=r"\S",
                               description="What to draw; words the model does not know "
                               "are ignored (GET /v1/models lists each model's).")]
NegativePrompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS,
                                       description="What to steer away from.")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Random when absent; the seed "
                            "used is always returned."), WHOLE_NUMBER]
Steps = Annotated[int, Field(ge=1, description="Sampling steps; at most the model's "
                             "max_inference_steps."), WHOLE_NUMBER]
Guidance = Annotated[float, Field(ge=0, le=30, allow_inf_nan=False,
                                  description="Classifier-free guidance scale.")]
TtlSeconds = Annotated[int, Field(ge=1, le=int(MAX_LIFETIME_SECONDS),
                                  description="How long stored images live; at most the "
                                  "model's default TTL (it may only shorten it)."), WHOLE_NUMBER]
Count = Annotated[int, Field(ge=1, le=MAX_N, description="Images to make; at most the "
                             "model's max_n."), WHOLE_NUMBER]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE, description="Pixels; width x height must be "
                            "one of the model's sizes."), WHOLE_NUMBER]
Strength = Annotated[float, Field(ge=0.01, le=1, allow_inf_nan=False,
                                  description="How much of the image is redrawn (1: all).")]
ImageInput = Annotated[str, Field(description="A PNG, JPEG or WebP image: base64, or a "
                                  "base64 data URL.")]
ModelName = Annotated[str, Field(max_length=200, description="A model of GET /v1/models; "
                                  "the default model when absent.")]
OutputFormat = Literal["png", "webp", "jpeg"]
OutputCompression = Annotated[int, Field(ge=0, le=100, description="WebP and JPEG quality "
                                         "(as OpenAI's output_compression); 100 when "
                                         "absent."), WHOLE_NUMBER]
WebhookEvent = Literal["started", "progress", "completed"]
MAX_WEBHOOK_URL_CHARS = 2048


class RequestModel(BaseModel):
    # Strict: "2" is not an integer, true is not a number, 2.5 is not an integer.
    # Unknown fields are ignored, as OpenAI's clients send some this service does not use.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class LoraChoice(RequestModel):
    """One adapter for this request only."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200, description="An adapter of the "
                               "model: the operator's (GET /v1/models lists them) or the id "
                               "of one you uploaded (POST /v1/loras).")]
    scale: Annotated[float, Field(ge=-4, le=4, allow_inf_nan=False,
                                  description="How strongly it applies (1: as trained).")] = 1.0


class GenerationFields(RequestModel):
    """What every generation surface takes."""

    prompt: Prompt
    negative_prompt: NegativePrompt | None = None
    seed: Seed | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    ttl_seconds: TtlSeconds | None = None
    output_format: OutputFormat | None = None
    output_compression: OutputCompression | None = None
    loras: Annotated[list[LoraChoice], Field(max_length=MAX_ADAPTERS_PER_REQUEST,
                                             description="Adapters (LoRA) of the model, "
                                             "applied to this request only.")] | None = None


class ImageGenerationRequest(GenerationFields):
    """POST /v1/images/generations (OpenAI's Images API)."""

    model: ModelName | None = None
    n: Count | None = None
    size: Annotated[str, Field(pattern=SIZE_PATTERN, description="WIDTHxHEIGHT, one of the "
                               "model's sizes; its default size when absent.")] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    stream: bool | None = Field(None, description="Answer with OpenAI's image stream "
                                "(text/event-stream): partial images, then each final image "
                                "with usage, as base64. Nothing is stored.")
    partial_images: Annotated[int, Field(ge=0, le=3, description="Partial images sent while "
                                         "sampling (needs stream); fewer when there are few "
                                         "steps."), WHOLE_NUMBER] | None = None


class ImageEditForm(ImageGenerationRequest):
    """POST /v1/images/edits, a multipart form (OpenAI's)."""

    image: bytes = Field(description="The image to edit: PNG, JPEG or WebP. Transparent "
                         "pixels are repainted when there is no mask.")
    mask: bytes | None = Field(None, description="The same size as image; repaints where it "
                               "is transparent (or, when opaque, white).")
    strength: Strength | None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _form_boolean(cls, value: object) -> object:
        """A form's values are text: a boolean is "true" or "false" (what httpx and the
        openai client send), not the lax "0", "yes" or "on" that mean it only by habit."""
        if isinstance(value, str) and value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value


class NativeFields(GenerationFields):
    """The native form's fields (POST /v1/inference/{model}, jobs, batch lines)."""

    width: Side | None = None
    height: Side | None = None
    num_images: Count | None = None
    output: Literal["url", "data_url"] | None = None


class InferenceRequest(NativeFields):
    """POST /v1/inference/{model}."""

    init_image: ImageInput | None = None
    mask_image: Annotated[ImageInput, Field(description="Needs init_image; the same size. "
                                            "Repaints where transparent (or white).")] \
        | None = None
    strength: Strength | None = None


class Webhook(RequestModel):
    """Where to send signed notices of a job's or batch's events, and which."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS,
                              description="An http(s) URL of a public address (the operator "
                              "may allow others).")]
    events: list[WebhookEvent] | None = Field(None, max_length=3, description="started, "
                                              "progress (at most once a second), completed "
                                              "(the default).")


class BatchWebhookQuery(RequestModel):
    """POST /v1/batches' query string: a batch's webhook (its body is the JSON Lines)."""

    webhook_url: Annotated[str, Field(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS)] | None \
        = None
    webhook_events: list[WebhookEvent] | None = Field(None, max_length=3)


class JobRequest(InferenceRequest):
    """POST /v1/jobs: the native body plus the model, and step previews."""

    model: ModelName | None = None
    output: Literal["url"] | None = Field(None, description="A job's images are stored; "
                                          "its result shows their URLs.")
    previews: bool | None = Field(None, description="Send a 64x64 PNG preview with each "
                                  "step's event.")
    webhook: Webhook | None = Field(None, description="Signed notices of the job's events "
                                    "(Standard Webhooks); see GET /v1/webhooks/secret.")


class BatchLineBody(NativeFields):
    """One line's request in POST /v1/batches: text-to-image, stored images."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = None
    output: Literal["url"] | None = None


class BatchLine(RequestModel):
    model_config = ConfigDict(extra="forbid")

    custom_id: Annotated[str, Field(min_length=1, max_length=MAX_CUSTOM_ID_CHARS,
                                     description="Unique in the batch.")]
    body: BatchLineBody


class LoraUpload(RequestModel):
    """POST /v1/loras as JSON: a safetensors file in base64 (or a multipart form: `file`)."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName | None = None
    data: Annotated[str, Field(description="The adapter's .safetensors bytes, base64 "
                               "(required in JSON).")] | None = None
    ttl_seconds: TtlSeconds | None = None


Lifetime = Annotated[float, Field(ge=1, le=MAX_LIFETIME_SECONDS, allow_inf_nan=False,
                                  description="Seconds: at least 1, at most a year.")]


class ModelRetentionUpdate(RequestModel):
    model_config = ConfigDict(extra="forbid")

    default_ttl_seconds: Lifetime | None = None
    max_ttl_seconds: Lifetime | None = None


class RetentionUpdate(RequestModel):
    """PUT /admin/retention: fields left out keep their current values."""

    model_config = ConfigDict(extra="forbid")

    default_ttl_seconds: Lifetime | None = None
    max_ttl_seconds: Lifetime | None = None
    batch_retention_seconds: Lifetime | None = None
    models: dict[Annotated[str, Field(max_length=200)], ModelRetentionUpdate] | None = Field(
        None, description="Per-model limits, by the name of a served model; replaces the "
        "current per-model limits.")
    apply_to_existing: bool | None = Field(None, description="Also shorten the images "
                                           "already stored to the new limits.")


class KeyCreate(RequestModel):
    """POST /admin/keys: a new API key; limits left out are unlimited."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100,
                               description="Who or what the key is for (shown in lists).")]
    models: list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, min_length=1, description="The served models it may use; all when absent.")
    expires_at: Annotated[float, Field(allow_inf_nan=False)] | Annotated[
        str, Field(max_length=64)] | None = Field(
        None, description="When it stops working: Unix seconds or ISO 8601 (UTC when no "
        "zone is given); never when absent.")
    requests_per_minute: Annotated[int, Field(ge=1, le=10**9), WHOLE_NUMBER] | None = Field(
        None, description="Generation calls (every POST under /v1) in any 60 seconds.")
    max_concurrent: Annotated[int, Field(ge=1, le=10**6), WHOLE_NUMBER] | None = Field(
        None, description="Generations queued or running at once.")
    device_seconds_per_day: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)
                                      ] | None = Field(
        None, description="Device time per UTC day; a request is admitted while the "
        "day's use is below it.")


RequestModelT = TypeVar("RequestModelT", bound=RequestModel)


def field_names(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)


def _all_field_names() -> frozenset[str]:
    models: list[type[BaseModel]] = [RequestModel]
    names: set[str] = set()
    while models:
        model = models.pop()
        names |= set(model.model_fields)
        models.extend(model.__subclasses__())
    return frozenset(names)


def validate(model: type[RequestModelT], document: Any, *, prefix: str = "",
             strict: bool | None = None) -> RequestModelT:
    """The validated request, or a 400 naming the first bad field (never its value)."""
    try:
        return model.model_validate(document, strict=strict)
    except ValidationError as exc:
        raise validation_error(exc, prefix) from None


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    known = _all_field_names()
    # Keys are the client's text: only names some request model declares are repeated back
    # (a model name in the retention map, say, shows as "*").
    parts = [prefix.rstrip(".")] if prefix else []
    parts += [str(p) if isinstance(p, int) or p in known else "*" for p in error["loc"]]
    name = ".".join(parts)
    if not error["loc"]:
        return ApiError(400, f"'{name}' must be a JSON object." if name else
                        "The body must be a JSON object.", param=name or None,
                        code="invalid_value")
    if error["type"] == "extra_forbidden":
        if parts[-1] == "*":
            parent = ".".join(parts[:-1])
            return ApiError(400, f"{f'{parent!r}' if parent else 'The body'} has a field "
                            "this request does not take.", param=parent or None,
                            code="unknown_field")
        return ApiError(400, f"'{name}' is not a field this request takes.",
                        param=name, code="unknown_field")
    return ApiError(400, f"'{name}' {_reason(error['type'], error['msg'])}.", param=name,
                    code="invalid_value")


def _reason(kind: str, message: str) -> str:
    """Pydantic's message (it names limits and types, never the value) as a predicate."""
    if kind == "missing":
        return "is required"
    for lead in ("Input should", "String should", "Value should", "Dictionary should"):
        if message.startswith(lead):
            return "must" + message[len(lead):]
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    return "is not valid: " + message
