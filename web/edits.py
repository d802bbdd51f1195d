"""POST /v1/images/edits: OpenAI's multipart form, for image-to-image and inpainting.

The form (image, mask, prompt, n, size, response_format, model, plus this
service's extensions) is parsed in memory by web.multipart as it arrives, never
by `request.form()`, so an uploaded image never reaches a temporary file.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.generation import generate
from web import strict_json
from web.auth import principal_of
from web.body import require_media_type, stream_body
from web.errors import bad_request
from web.generation_params import find_model, parse_openai
from web.image_inputs import load_inputs
from web.multipart import Limits, fields_and_files, parse_form
from web.openai_api import images_response, log_generation
from web.openai_stream import requested_partials, stream_images
from web.request_log import request_id_of
from web.request_models import ImageEditForm, field_names, validate
from web.routing import public_base_url, services_of

# Every field an error message may name; OpenAI's other fields (user, quality...) are ignored.
KNOWN_FIELDS = field_names(ImageEditForm) | {"image[]", "user"}


def upload(files: dict[str, bytes], fields: dict[str, str], name: str,
           *aliases: str) -> bytes | None:
    """A file part by name (or alias); a plain text field of that name is refused."""
    for key in (name, *aliases):
        if key in fields:
            raise bad_request(f"'{name}' must be an uploaded file.", name)
        if key in files:
            return files[key]
    return None


def form_loras(fields: dict[str, str]) -> Any:
    """The `loras` field of a form: JSON text, `[{"name": "pixel", "scale": 0.8}]`."""
    text = fields.get("loras")
    if text is None:
        return None
    try:
        loras = strict_json.parse(text.encode())
    except strict_json.JsonSyntaxError:
        loras = None
    # A form field is present or absent, never null: sent, it must be the list.
    if not isinstance(loras, list):
        raise bad_request("'loras' must be a JSON list of {\"name\", \"scale\"}.", "loras")
    return loras


async def create_edit(request: Request) -> Response:
    services = services_of(request)
    require_media_type(request, "multipart/form-data")
    max_bytes = services.settings.max_body_bytes
    parts = await parse_form(stream_body(request, max_bytes), request.headers["content-type"],
                             Limits(max_file_bytes=max_bytes), KNOWN_FIELDS)
    fields, files = fields_and_files(parts, KNOWN_FIELDS)
    # The OpenAI client sends a list of images as image[]; this API edits one.
    image = upload(files, fields, "image", "image[]")
    if image is None:
        raise bad_request("'image' is required: the image to edit, as a file part.", "image")
    # A form's values are text: numbers and booleans are read from it (strict=False),
    # and `loras`, a list, from JSON text.
    form = validate(ImageEditForm, {**fields, "image": image, "loras": form_loras(fields),
                                    "mask": upload(files, fields, "mask")}, strict=False)
    spec = find_model(services.engine.specs, form.model, services.default_model)
    gen = parse_openai(spec, form, form.strength, owner=principal_of(request).id)
    inputs = await load_inputs(form.image, form.mask, (gen.width, gen.height), "image", "mask")
    log_generation(request, gen, None)
    partials = requested_partials(form.stream, form.partial_images)
    if partials is not None:
        return await stream_images(services, gen, partials, "image_edit", request_id_of(request),
                                   inputs.init_image, inputs.mask_image,
                                   principal=principal_of(request))
    generated = await generate(services, gen, request_id_of(request), public_base_url(request),
                               inputs.init_image, inputs.mask_image,
                               principal=principal_of(request))
    log_generation(request, gen, generated)
    return JSONResponse(images_response(generated))


routes = [Route("/v1/images/edits", create_edit, methods=["POST"])]
