"""POST /v1/loras, GET and DELETE /v1/loras/{id}: private adapters, held in memory only.

The upload is read into memory under a byte cap (IMAGEGEN_MAX_LORA_BYTES) and
parsed there: a multipart form (`file`, `model`, `ttl_seconds`) by web.multipart,
never `request.form()` (which spools large parts to a temporary file), or JSON
with the file in base64. The adapter belongs to the caller's principal; another
principal gets 404, and cannot name it in a request.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagegen.adapters import Adapter, AdapterInvalid
from service.adapters import delete_adapter, find_adapter, upload_adapter
from web.auth import principal_of
from web.body import off_loop_if_large, parse_model, read_body, require_media_type, stream_body
from web.errors import ApiError, bad_request
from web.generation_params import find_model
from web.image_inputs import decode_base64
from web.multipart import Limits, fields_and_files, parse_form
from web.request_log import log_fields
from web.request_models import LoraUpload, field_names, validate
from web.routing import services_of

KNOWN_FIELDS = field_names(LoraUpload) | {"file"}
# Room for the form's other fields and boundaries, or for JSON's base64 (4/3) and keys.
_ENVELOPE_BYTES = 64 * 1024


def describe(adapter: Adapter) -> dict[str, object]:
    return {"id": adapter.name, "object": "lora", "model": adapter.model,
            "expires_at": adapter.expires_at}


async def create_lora(request: Request) -> JSONResponse:
    services = services_of(request)
    cap = services.settings.max_lora_bytes
    media_type = require_media_type(request, "multipart/form-data", "application/json")
    if media_type == "application/json":
        raw = await read_body(request, cap * 4 // 3 + _ENVELOPE_BYTES)
        body = await off_loop_if_large(raw, parse_model, LoraUpload)
        if body.data is None:
            raise bad_request("'data' is required: the adapter's .safetensors, base64.", "data")
        data = decode_base64(body.data, "data", cap)
        if len(data) > cap:  # base64's length bounds the bytes only to a multiple of 3
            raise ApiError(413, f"'data' is larger than {cap} bytes.", param="data",
                           code="body_too_large")
    else:
        parts = await parse_form(stream_body(request, cap + _ENVELOPE_BYTES),
                                 request.headers["content-type"],
                                 Limits(max_parts=4, max_file_bytes=cap), KNOWN_FIELDS)
        fields, files = fields_and_files(parts, KNOWN_FIELDS)
        if "file" not in files:
            raise bad_request("'file' is required: the adapter's .safetensors, as a file "
                              "part.", "file")
        data = files["file"]
        # A form's values are text: numbers are read from it (strict=False).
        body = validate(LoraUpload, fields, strict=False)
    spec = find_model(services.engine.specs, body.model, services.default_model)
    try:
        adapter = await upload_adapter(services, spec.name, data, principal_of(request).id,
                                       body.ttl_seconds)
    except AdapterInvalid as exc:
        # Named after the field the bytes came in: `file` in a form, `data` in JSON.
        field = "data" if exc.param == "file" and media_type == "application/json" else exc.param
        raise bad_request(exc.message, field) from None
    # The id is not logged: with it, its owner's requests name the adapter.
    log_fields(request, model=spec.name, ttl_seconds=body.ttl_seconds)
    return JSONResponse(describe(adapter), status_code=201)


async def get_lora(request: Request) -> JSONResponse:
    adapter = find_adapter(services_of(request), request.path_params["lora_id"],
                           principal_of(request).id)
    return JSONResponse(describe(adapter))


async def remove_lora(request: Request) -> Response:
    delete_adapter(services_of(request), request.path_params["lora_id"],
                   principal_of(request).id)
    return Response(status_code=204)


routes = [
    Route("/v1/loras", create_lora, methods=["POST"]),
    Route("/v1/loras/{lora_id}", get_lora, methods=["GET"]),
    Route("/v1/loras/{lora_id}", remove_lora, methods=["DELETE"]),
]
