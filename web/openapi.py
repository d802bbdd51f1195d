"""GET /openapi.json: the public API as an OpenAPI 3.1 document (checked against the routes)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ERROR = {"$ref": "#/components/schemas/Error"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str, *errors: int, ok_status: str = "200") -> dict[str, Any]:
    responses: dict[str, Any] = {ok_status: {"description": ok}}
    for status in errors:
        responses[str(status)] = {"description": "Error",
                                  "content": {"application/json": {"schema": ERROR}}}
    return responses


GENERATION_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": 4000},
    "negative_prompt": {"type": "string", "maxLength": 4000},
    "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "num_inference_steps": {"type": "integer", "minimum": 1},
    "guidance_scale": {"type": "number", "minimum": 0, "maximum": 30},
    "ttl_seconds": {"type": "integer", "minimum": 1},
    "output_format": {"enum": ["png", "webp", "jpeg"]},
}

OPENAI_REQUEST = {
    "type": "object", "required": ["prompt"],
    "properties": {**GENERATION_FIELDS,
                   "model": {"type": "string"},
                   "n": {"type": "integer", "minimum": 1, "maximum": 8},
                   "size": {"type": "string", "pattern": "^[0-9]+x[0-9]+$"},
                   "response_format": {"enum": ["url", "b64_json"]}},
}

# Image inputs: PNG, JPEG or WebP. A mask repaints where it is transparent (or, when
# opaque, white); with no mask, the image's own transparent pixels are repainted.
STRENGTH = {"type": "number", "minimum": 0.01, "maximum": 1,
            "description": "How much of the image is redrawn (1: all of it)."}
IMAGE_INPUT = {"type": "string",
               "description": "A PNG, JPEG or WebP image: base64, or a base64 data URL."}

NATIVE_REQUEST = {
    "type": "object", "required": ["prompt"],
    "properties": {**GENERATION_FIELDS,
                   "width": {"type": "integer"}, "height": {"type": "integer"},
                   "num_images": {"type": "integer", "minimum": 1, "maximum": 8},
                   "output": {"enum": ["url", "data_url"]},
                   "init_image": IMAGE_INPUT,
                   "mask_image": {**IMAGE_INPUT, "description": "Needs init_image; same size."},
                   "strength": STRENGTH},
}

EDIT_REQUEST = {
    "type": "object", "required": ["image", "prompt"],
    "properties": {**GENERATION_FIELDS,
                   "image": {"type": "string", "contentMediaType": "image/*"},
                   "mask": {"type": "string", "contentMediaType": "image/*",
                            "description": "The same size as image."},
                   "model": {"type": "string"},
                   "n": {"type": "integer", "minimum": 1, "maximum": 8},
                   "size": {"type": "string", "pattern": "^[0-9]+x[0-9]+$"},
                   "response_format": {"enum": ["url", "b64_json"]},
                   "strength": STRENGTH},
}

RETENTION = {
    "type": "object",
    "properties": {"default_ttl_seconds": {"type": "number"},
                   "max_ttl_seconds": {"type": "number"},
                   "batch_retention_seconds": {"type": "number"},
                   "models": {"type": "object"},
                   "apply_to_existing": {"type": "boolean"}},
}

JOB_REQUEST = {
    "type": "object", "required": ["prompt"],
    "properties": {**GENERATION_FIELDS,
                   "model": {"type": "string"},
                   "width": {"type": "integer"}, "height": {"type": "integer"},
                   "num_images": {"type": "integer", "minimum": 1, "maximum": 8},
                   "init_image": IMAGE_INPUT,
                   "mask_image": {**IMAGE_INPUT, "description": "Needs init_image; same size."},
                   "strength": STRENGTH,
                   "output": {"enum": ["url"]},
                   "previews": {"type": "boolean",
                                "description": "Send a 64x64 PNG preview with each step."}},
}
JOB_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
BATCH_LINE = {
    "type": "object", "required": ["custom_id", "body"], "additionalProperties": False,
    "properties": {"custom_id": {"type": "string", "minLength": 1, "maxLength": 64,
                                 "description": "Unique in the batch."},
                   "body": {"type": "object", "required": ["prompt"], "properties": {
                       **GENERATION_FIELDS, "model": {"type": "string"},
                       "width": {"type": "integer"}, "height": {"type": "integer"},
                       "num_images": {"type": "integer", "minimum": 1, "maximum": 8},
                       "output": {"enum": ["url"]}}}},
}
BATCH_PARAM = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}
MODEL_PARAM = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
IMAGE_PARAMS = [
    {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "ext", "in": "path", "required": True,
     "schema": {"enum": ["png", "webp", "jpeg"]}},
]
ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]

PATHS: dict[str, dict[str, Any]] = {
    "/v1/images/generations": {"post": {
        "summary": "Generate images (OpenAI-compatible)",
        "requestBody": _json_body(OPENAI_REQUEST),
        "responses": _responses("Images", 400, 404, 413, 415, 429, 503)}},
    "/v1/images/edits": {"post": {
        "summary": "Edit an image: image-to-image, or inpainting with a mask "
                   "(OpenAI-compatible)",
        "requestBody": {"required": True,
                        "content": {"multipart/form-data": {"schema": EDIT_REQUEST}}},
        "responses": _responses("Images", 400, 404, 413, 415, 429, 503)}},
    "/v1/inference/{model}": {"post": {
        "summary": "Generate images (native form)", "parameters": [MODEL_PARAM],
        "requestBody": _json_body(NATIVE_REQUEST),
        "responses": _responses("Images", 400, 404, 413, 415, 429, 503)}},
    "/v1/models": {"get": {"summary": "List models", "responses": _responses("Models")}},
    "/v1/models/{model}": {"get": {"summary": "One model", "parameters": [MODEL_PARAM],
                                   "responses": _responses("Model", 404)}},
    "/v1/jobs": {"post": {
        "summary": "Queue a generation as an async job (native body plus model, previews)",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "maxLength": 255}}],
        "requestBody": _json_body(JOB_REQUEST),
        "responses": _responses("Accepted: id, status, queue_position", 400, 404, 409, 413,
                                415, 429, ok_status="202")}},
    "/v1/jobs/{job_id}": {
        "get": {"summary": "A job's status, queue position, progress and result",
                "parameters": [JOB_PARAM], "responses": _responses("Job", 404)},
        "delete": {"summary": "Cancel a queued (200) or running (202) job",
                   "parameters": [JOB_PARAM],
                   "responses": {**_responses("Canceled", 404, 409),
                                 "202": {"description": "Stops at its next step"}}}},
    "/v1/jobs/{job_id}/events": {"get": {
        "summary": "Server-Sent Events: queued, started, progress, then succeeded, failed "
                   "or canceled; a late client first gets the state so far",
        "parameters": [JOB_PARAM, {"name": "Last-Event-ID", "in": "header",
                                   "required": False, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The event stream",
                              "content": {"text/event-stream": {}}},
                      "204": {"description": "Last-Event-ID already saw the end"},
                      "404": {"description": "Unknown or expired job"}}}},
    "/v1/batches": {"post": {
        "summary": "Queue many requests at once: JSON Lines (or a JSON array) of "
                   "{custom_id, body}; one bad line rejects the batch, naming lines by number",
        "requestBody": {"required": True, "content": {
            "application/jsonl": {"schema": BATCH_LINE},
            "application/json": {"schema": {"type": "array", "items": BATCH_LINE}}}},
        "responses": _responses("Accepted: id, status, counts", 400, 413, 415, 429, 503,
                                ok_status="202")}},
    "/v1/batches/{batch_id}": {
        "get": {"summary": "A batch's status, counts (total, done, failed), timings, time left",
                "parameters": [BATCH_PARAM], "responses": _responses("Batch", 404)},
        "delete": {"summary": "Cancel a batch; it stops between lines",
                   "parameters": [BATCH_PARAM], "responses": _responses("Canceled", 404, 409)}},
    "/v1/batches/{batch_id}/output": {"get": {
        "summary": "The results so far, JSON Lines: line, custom_id, response (image URLs, "
                   "seed) or error",
        "parameters": [BATCH_PARAM],
        "responses": {"200": {"description": "JSON Lines", "content": {"application/jsonl": {}}},
                      "404": {"description": "Unknown batch, or its retention has ended"}}}},
    "/i/{token}.{ext}": {
        "get": {"summary": "An image, until it expires", "parameters": IMAGE_PARAMS,
                "responses": {"200": {"description": "The image",
                                      "content": {"image/*": {}}}, "404": {
                    "description": "Unknown or expired"}}},
        "head": {"summary": "An image's headers", "parameters": IMAGE_PARAMS,
                 "responses": {"200": {"description": "Headers"},
                               "404": {"description": "Unknown or expired"}}},
        "delete": {"summary": "Delete an image now", "parameters": IMAGE_PARAMS,
                   "responses": {"204": {"description": "Deleted"},
                                 "404": {"description": "Unknown or expired"}}}},
    "/admin/retention": {
        "get": {"summary": "The retention policy", "security": ADMIN,
                "responses": _responses("Policy", 401, 403, 404)},
        "put": {"summary": "Change the retention policy", "security": ADMIN,
                "requestBody": _json_body(RETENTION),
                "responses": _responses("Policy", 400, 401, 403, 404)}},
    "/admin/stats": {"get": {"summary": "Store and queue statistics", "security": ADMIN,
                             "responses": _responses("Stats", 401, 403, 404)}},
    "/healthz": {"get": {"summary": "Alive", "responses": _responses("Alive")}},
    "/readyz": {"get": {"summary": "Ready", "responses": _responses("Ready", 503)}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": _responses("Metrics")}},
    "/v1/privacy": {"get": {"summary": "The live privacy manifest",
                            "responses": _responses("Manifest")}},
    "/openapi.json": {"get": {"summary": "This document", "responses": _responses("OpenAPI")}},
    "/": {"get": {"summary": "Demo index", "responses": _responses("HTML")}},
    "/models/{name}": {"get": {"summary": "Demo page of a model",
                               "parameters": [{"name": "name", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
                               "responses": _responses("HTML", 404)}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "imagegen", "version": "0.1.0",
                 "description": "Image generation with ephemeral outputs."},
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {
                "type": "object",
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": {"type": ["string", "null"]},
                               "code": {"type": ["string", "null"]}}}}}},
        },
    }


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
