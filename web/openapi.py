"""GET /openapi.json: the public API as an OpenAPI 3.1 document.

Request bodies are the JSON Schemas of web.request_models, the same models
that validate them. The limits of the models being served (their sizes,
max_n, steps, the TTL ceiling of the live retention policy, vocabulary) are
written into those schemas as constraints and descriptions when the document
is asked for, so it states what this server accepts now.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from imagegen.registry import ModelSpec
from store.retention import RetentionPolicy
from web.request_models import (
    BatchLine,
    ImageEditForm,
    ImageGenerationRequest,
    InferenceRequest,
    JobRequest,
    KeyCreate,
    LoraUpload,
    RequestModel,
    RetentionUpdate,
)
from web.routing import services_of

REQUEST_MODELS: tuple[type[RequestModel], ...] = (
    ImageGenerationRequest, ImageEditForm, InferenceRequest, JobRequest, BatchLine,
    RetentionUpdate, KeyCreate, LoraUpload)
ERROR = {"$ref": "#/components/schemas/Error"}
# What any request may be answered, whatever it asks: too slow a client (408), too many
# bodies being received at once (503, with Retry-After).
BODY_ERRORS = (400, 408, 413, 415, 503)
GENERATION_ERRORS = (*BODY_ERRORS, 404, 429, 500, 504)


def ref(model: type[RequestModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json_body(model: type[RequestModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(model)}}}


def _responses(ok: str, *errors: int, ok_status: str = "200",
               ok_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    ok_response: dict[str, Any] = {"description": ok}
    if ok_schema is not None:
        ok_response["content"] = {"application/json": {"schema": ok_schema}}
    responses: dict[str, Any] = {ok_status: ok_response}
    for status in sorted(set(errors)):
        responses[str(status)] = {"description": "Error",
                                  "content": {"application/json": {"schema": ERROR}}}
    return responses


def _path_param(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


# The id an accepted job or batch answers with, and where the stateful tests may go next.
ACCEPTED = {"type": "object", "required": ["id", "status"],
            "properties": {"id": {"type": "string"}, "status": {"type": "string"}}}


def _links(prefix: str, param: str) -> dict[str, Any]:
    by_id = {param: "$response.body#/id"}
    links = {"Get": {"operationId": f"get_{prefix}", "parameters": by_id},
             "Cancel": {"operationId": f"cancel_{prefix}", "parameters": by_id}}
    if prefix == "job":
        links["Events"] = {"operationId": "job_events", "parameters": by_id}
    else:
        links["Output"] = {"operationId": "batch_output", "parameters": by_id}
    return links


JOB_PARAM = _path_param("job_id")
BATCH_PARAM = _path_param("batch_id")
MODEL_PARAM = _path_param("model")
IMAGE_PARAMS = [_path_param("token"),
                {"name": "ext", "in": "path", "required": True,
                 "schema": {"enum": ["png", "webp", "jpeg"]}}]
ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]
ADMIN_ERRORS = (401, 403, 404)

PATHS: dict[str, dict[str, Any]] = {
    "/v1/images/generations": {"post": {
        "summary": "Generate images (OpenAI-compatible)",
        "requestBody": _json_body(ImageGenerationRequest),
        "responses": _responses("Images", *GENERATION_ERRORS)}},
    "/v1/images/edits": {"post": {
        "summary": "Edit an image: image-to-image, or inpainting with a mask "
                   "(OpenAI-compatible)",
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": ref(ImageEditForm)}}},
        "responses": _responses("Images", *GENERATION_ERRORS)}},
    "/v1/inference/{model}": {"post": {
        "summary": "Generate images (native form)", "parameters": [MODEL_PARAM],
        "requestBody": _json_body(InferenceRequest),
        "responses": _responses("Images", *GENERATION_ERRORS)}},
    "/v1/models": {"get": {"summary": "List models", "responses": _responses("Models")}},
    "/v1/models/{model}": {"get": {"summary": "One model", "parameters": [MODEL_PARAM],
                                   "responses": _responses("Model", 404)}},
    "/v1/loras": {"post": {
        "operationId": "upload_lora",
        "summary": "Upload a private LoRA adapter (.safetensors), held in memory only, yours "
                   "until it expires like an image; its id is then a `loras` name",
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "model": {"type": "string"}, "ttl_seconds": {"type": "integer"}}}},
            "application/json": {"schema": ref(LoraUpload)}}},
        "responses": _responses("The adapter's id, model and expires_at", *BODY_ERRORS, 404,
                                ok_status="201")}},
    "/v1/loras/{lora_id}": {
        "get": {"operationId": "get_lora", "summary": "Your uploaded adapter",
                "parameters": [_path_param("lora_id")], "responses": _responses("Adapter", 404)},
        "delete": {"operationId": "delete_lora", "summary": "Delete your uploaded adapter now",
                   "parameters": [_path_param("lora_id")],
                   "responses": _responses("Deleted", 404, ok_status="204")}},
    "/v1/jobs": {"post": {
        "operationId": "create_job",
        "summary": "Queue a generation as an async job (native body plus model, previews)",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                   "pattern": "^[\\x20-\\x7e]+$"}}],
        "requestBody": _json_body(JobRequest),
        "responses": {**_responses("Accepted: id, status, queue_position", *BODY_ERRORS,
                                   404, 409, 429, ok_status="202", ok_schema=ACCEPTED)}}},
    "/v1/jobs/{job_id}": {
        "get": {"operationId": "get_job",
                "summary": "A job's status, queue position, progress and result",
                "parameters": [JOB_PARAM], "responses": _responses("Job", 404)},
        "delete": {"operationId": "cancel_job",
                   "summary": "Cancel a queued (200) or running (202) job",
                   "parameters": [JOB_PARAM],
                   "responses": {**_responses("Canceled", 404, 409),
                                 "202": {"description": "Stops at its next step"}}}},
    "/v1/jobs/{job_id}/events": {"get": {
        "operationId": "job_events",
        "summary": "Server-Sent Events: queued, started, progress, then succeeded, failed "
                   "or canceled; a late client first gets the state so far",
        "parameters": [JOB_PARAM, {"name": "Last-Event-ID", "in": "header",
                                   "required": False, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The event stream",
                              "content": {"text/event-stream": {}}},
                      "204": {"description": "Last-Event-ID already saw the end"},
                      "404": {"description": "Unknown or expired job",
                              "content": {"application/json": {"schema": ERROR}}}}}},
    "/v1/batches": {"post": {
        "operationId": "create_batch",
        "summary": "Queue many requests at once: JSON Lines (or a JSON array) of "
                   "{custom_id, body}; one bad line rejects the batch, naming lines by number",
        "parameters": [
            {"name": "webhook_url", "in": "query", "required": False,
             "description": "Signed notices of the batch's events (see /v1/webhooks/secret)",
             "schema": {"type": "string", "minLength": 1, "maxLength": 2048}},
            {"name": "webhook_events", "in": "query", "required": False,
             "description": "Comma-separated: started, progress, completed (the default)",
             "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "application/jsonl": {"schema": ref(BatchLine)},
            "application/json": {"schema": {"type": "array", "items": ref(BatchLine),
                                            "minItems": 1, "maxItems": 1000}}}},
        "responses": _responses("Accepted: id, status, counts", *BODY_ERRORS, 429,
                                ok_status="202", ok_schema=ACCEPTED)}},
    "/v1/batches/{batch_id}": {
        "get": {"operationId": "get_batch",
                "summary": "A batch's status, counts (total, done, failed), timings, time left",
                "parameters": [BATCH_PARAM], "responses": _responses("Batch", 404)},
        "delete": {"operationId": "cancel_batch",
                   "summary": "Cancel a batch; it stops between lines",
                   "parameters": [BATCH_PARAM], "responses": _responses("Canceled", 404, 409)}},
    "/v1/batches/{batch_id}/output": {"get": {
        "operationId": "batch_output",
        "summary": "The results so far, JSON Lines: line, custom_id, response (image URLs, "
                   "seed) or error",
        "parameters": [BATCH_PARAM],
        "responses": {"200": {"description": "JSON Lines", "content": {"application/jsonl": {}}},
                      "404": {"description": "Unknown batch, or its retention has ended",
                              "content": {"application/json": {"schema": ERROR}}}}}},
    "/i/{token}.{ext}": {
        "get": {"summary": "An image, until it expires", "parameters": IMAGE_PARAMS,
                "responses": {"200": {"description": "The image",
                                      "content": {"image/*": {}}},
                              **_responses("", 404, 503)}},
        "head": {"summary": "An image's headers", "parameters": IMAGE_PARAMS,
                 "responses": {"200": {"description": "Headers"},
                               "404": {"description": "Unknown or expired"},
                               "503": {"description": "The store is unavailable"}}},
        "delete": {"summary": "Delete an image now", "parameters": IMAGE_PARAMS,
                   "responses": {"204": {"description": "Deleted"},
                                 **_responses("", 404, 503)}}},
    "/admin/retention": {
        "get": {"summary": "The retention policy", "security": ADMIN,
                "responses": _responses("Policy", *ADMIN_ERRORS)},
        "put": {"summary": "Change the retention policy", "security": ADMIN,
                "requestBody": _json_body(RetentionUpdate),
                "responses": _responses("Policy", *BODY_ERRORS, *ADMIN_ERRORS)}},
    "/admin/stats": {"get": {"summary": "Store and queue statistics", "security": ADMIN,
                             "responses": _responses("Stats", *ADMIN_ERRORS)}},
    "/admin/models/{name}/load": {"post": {
        "summary": "Move a model into device memory now (least recently used ones make room)",
        "security": ADMIN, "parameters": [_path_param("name")],
        "responses": _responses("The model's id and state", *ADMIN_ERRORS, 503)}},
    "/admin/models/{name}/offload": {"post": {
        "summary": "Move a model out to CPU RAM now; its next request brings it back",
        "security": ADMIN, "parameters": [_path_param("name")],
        "responses": _responses("The model's id and state", *ADMIN_ERRORS)}},
    "/admin/keys": {
        "post": {"summary": "Create an API key; the key is in this response only",
                 "security": ADMIN, "requestBody": _json_body(KeyCreate),
                 "responses": _responses("The key, with its id and limits", *BODY_ERRORS,
                                         *ADMIN_ERRORS, ok_status="201")},
        "get": {"summary": "Every API key, without secrets", "security": ADMIN,
                "responses": _responses("Keys", *ADMIN_ERRORS)}},
    "/admin/keys/{key_id}": {"delete": {
        "summary": "Revoke an API key (on every replica at once)", "security": ADMIN,
        "parameters": [_path_param("key_id")],
        "responses": _responses("The revoked key", *ADMIN_ERRORS, 404)}},
    "/admin/usage": {"get": {"summary": "Every key's usage by day and model", "security": ADMIN,
                             "responses": _responses("Usage", *ADMIN_ERRORS)}},
    "/v1/usage": {"get": {"summary": "The caller's usage by UTC day and model: requests, "
                                     "images, device seconds, cost",
                          "responses": _responses("Usage", 401, 403)}},
    "/v1/webhooks/secret": {"get": {
        "summary": "The caller's webhook signing secret (whsec_...): verify the "
                   "webhook-signature of each notice with it (Standard Webhooks)",
        "responses": _responses("Secret")}},
    "/healthz": {"get": {"summary": "Alive", "responses": _responses("Alive")}},
    "/readyz": {"get": {"summary": "Ready", "responses": _responses("Ready", 503)}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
    "/v1/privacy": {"get": {"summary": "The live privacy manifest",
                            "responses": _responses("Manifest")}},
    "/openapi.json": {"get": {"summary": "This document", "responses": _responses("OpenAPI")}},
    "/": {"get": {"summary": "Demo index", "responses": {
        "200": {"description": "HTML", "content": {"text/html": {}}}}}},
    "/models/{name}": {"get": {"summary": "Demo page of a model",
                               "parameters": [_path_param("name")],
                               "responses": {"200": {"description": "HTML",
                                                     "content": {"text/html": {}}},
                                             "404": {"description": "No such model"}}}},
}
PATHS["/v1/jobs"]["post"]["responses"]["202"]["links"] = _links("job", "job_id")
PATHS["/v1/batches"]["post"]["responses"]["202"]["links"] = _links("batch", "batch_id")
# With `stream: true` these answer OpenAI's image stream (Server-Sent Events) instead of JSON.
for _path in ("/v1/images/generations", "/v1/images/edits"):
    PATHS[_path]["post"]["responses"]["200"]["content"] = {"application/json": {},
                                                           "text/event-stream": {}}


@functools.cache
def request_schemas() -> dict[str, Any]:
    """The JSON Schemas of the request models, by name (generated once)."""
    _, schemas = models_json_schema([(model, "validation") for model in REQUEST_MODELS],
                                    ref_template="#/components/schemas/{model}")
    defs: dict[str, Any] = schemas["$defs"]
    return defs


def _narrow(schema: dict[str, Any], name: str, keywords: Mapping[str, Any]) -> None:
    """Add served limits to property `name` (to its non-null branch, when it is nullable)."""
    prop = schema.get("properties", {}).get(name)
    if prop is None:
        return
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    for branch in branches:
        branch.update(keywords)


def drawable_pattern(words: Iterable[str]) -> str:
    """A prompt with one of these words, as the shapes tokenizer reads it: a lowercased run
    of letters. Each letter is matched in either case (JSON Schema patterns have no flags)."""
    alternatives = "|".join("".join(f"[{c}{c.upper()}]" for c in word)
                            for word in sorted(words, key=lambda w: (-len(w), w)))
    return f"(^|[^A-Za-z])({alternatives})($|[^A-Za-z])"


def served_limits(specs: Mapping[str, ModelSpec], policy: RetentionPolicy,
                  pipelines: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Field -> the JSON Schema keywords that the models served now allow."""
    every = list(specs.values())

    def per_model(describe: Any) -> str:
        return "; ".join(f"{spec.name}: {describe(spec)}" for spec in every)

    ttl_ceiling = {spec.name: policy.for_model(spec.name).default_ttl_seconds for spec in every}
    sizes = sorted({size for spec in every for size in spec.sizes})
    vocabularies = {name: getattr(pipeline, "vocabulary", None)
                    for name, pipeline in pipelines.items()}
    words = "; ".join(
        f"{name}: " + ", ".join(w for group in vocabulary.values() for w in group)
        for name, vocabulary in vocabularies.items() if isinstance(vocabulary, dict))
    drawable = [getattr(pipeline, "drawable_words", None) for pipeline in pipelines.values()]
    prompt: dict[str, Any] = {}
    if words:
        prompt["description"] = ("What to draw. Words a model does not know are ignored, "
                                 f"and at least one must be one it can draw: {words}.")
    if all(drawable):  # when every model reads only its own words, the schema can say so
        prompt["pattern"] = drawable_pattern(w for found in drawable for w in found or ())
    count = {"maximum": max(spec.max_n for spec in every),
             "description": "Images to make, at most: " + per_model(lambda s: s.max_n)}
    side = "Pixels; width x height must be one of the model's sizes: " + per_model(
        lambda s: ", ".join(f"{w}x{h}" for w, h in s.sizes))
    return {
        "model": {"enum": sorted(specs), "description": "A served model; the default "
                  "when absent."},
        "n": count,
        "num_images": count,
        "num_inference_steps": {
            "maximum": max(spec.max_steps for spec in every),
            "description": "Sampling steps (default, most): " + per_model(
                lambda s: f"{s.default_steps}, {s.max_steps}")},
        "size": {"enum": [f"{w}x{h}" for w, h in sizes],
                 "description": "WIDTHxHEIGHT, one of the model's sizes: " + per_model(
                     lambda s: ", ".join(f"{w}x{h}" for w, h in s.sizes))},
        "width": {"enum": sorted({w for w, _ in sizes}), "description": side},
        "height": {"enum": sorted({h for _, h in sizes}), "description": side},
        "ttl_seconds": {
            "maximum": int(max(ttl_ceiling.values())),
            "description": "Seconds stored images live; at most the model's default TTL "
                           "(a request may only shorten it): " + per_model(
                               lambda s: f"{ttl_ceiling[s.name]:g}")},
        "prompt": prompt,
    }


def as_form_fields(schema: dict[str, Any]) -> None:
    """A multipart form's fields are text and cannot be null: drop the null branches, and
    the "type" of free text (any scalar a client sends arrives as text, and is taken)."""
    for name, prop in schema["properties"].items():
        branches = [b for b in prop.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            prop.update(branches[0])
        prop.pop("default", None)
        if prop.get("type") == "string" and prop.get("format") != "binary" \
                and not {"pattern", "enum"} & set(prop):
            del prop["type"]
        schema["properties"][name] = prop


def require_keys(paths: dict[str, dict[str, Any]]) -> None:
    """With IMAGEGEN_AUTH=keys, every /v1 call needs a key and may meet its limits."""
    for path, item in paths.items():
        if not path.startswith("/v1/"):
            continue
        for operation in item.values():
            operation["security"] = [{"bearer": []}]
            for status in (401, 403, 429):
                operation["responses"].setdefault(str(status), {
                    "description": "Error", "content": {"application/json": {"schema": ERROR}}})


def document(specs: Mapping[str, ModelSpec], policy: RetentionPolicy,
             pipelines: Mapping[str, Any], *, keys_required: bool = False) -> dict[str, Any]:
    schemas = copy.deepcopy(request_schemas())
    limits = served_limits(specs, policy, pipelines)
    for schema in schemas.values():
        for name, keywords in limits.items():
            _narrow(schema, name, keywords)
    as_form_fields(schemas["ImageEditForm"])
    schemas["RetentionUpdate"]["properties"]["models"]["anyOf"][0]["propertyNames"] = {
        "enum": sorted(specs)}
    paths = copy.deepcopy(PATHS)
    for operation in (paths["/v1/inference/{model}"]["post"], paths["/v1/models/{model}"]["get"],
                      paths["/models/{name}"]["get"]):
        operation["parameters"][0]["schema"]["enum"] = sorted(specs)
    if keys_required:
        require_keys(paths)
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagegen", "version": "0.1.0",
                 "description": "Image generation with ephemeral outputs."},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": schemas},
    }


async def openapi_json(request: Request) -> JSONResponse:
    services = services_of(request)
    engine = services.engine
    return JSONResponse(document(engine.specs, await services.retention.get(),
                                 engine.pipelines,
                                 keys_required=services.settings.auth == "keys"))


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
